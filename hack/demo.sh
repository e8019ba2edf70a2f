#!/usr/bin/env bash
# The local demo: a real control plane (no container engine), the operator, a CobrowseTLS
# with a JKS trust store, a Co-browse Deployment rolled when the CA rotates.
#
#   hack/demo.sh          run the demo, then stop everything
#   hack/demo.sh --keep   leave the cluster and the operator running to explore
#                         (stop with: .venv/bin/cobrowse-tls dev-cluster down --dir .cluster)
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
eval "$(hack/build-binaries.sh --print-env)"

keep=0
[[ ${1:-} == --keep ]] && keep=1
dir=$PWD/.cluster
work=$(mktemp -d)
op_pid=
stop_all() {
  [[ -n $op_pid ]] && kill "$op_pid" 2>/dev/null && wait "$op_pid" 2>/dev/null || true
  cobrowse-tls dev-cluster down --dir "$dir" >/dev/null || true
  rm -rf "$work"
}
if ((!keep)); then trap stop_all EXIT; fi

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Starting the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)"
eval "$(cobrowse-tls dev-cluster up --dir "$dir")"
kubectl get nodes -L kubernetes.io/os

step "Installing the CobrowseTLS CRD and starting the operator"
cobrowse-tls crd | kubectl apply --server-side -f -
kubectl wait --for=condition=Established crd/cobrowsetlses.tls.cobrowse.io --timeout=30s
cobrowse-tls run --all-namespaces --log-format plain --restart-window 1 >"$dir/operator.log" 2>&1 &
op_pid=$!
echo "operator log: $dir/operator.log"

step "A demo CA, its Secret, a Co-browse Deployment and the CobrowseTLS (examples/jks.yaml)"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
  -subj "/O=Demo/CN=Demo Rotated Root CA" -addext basicConstraints=critical,CA:TRUE \
  -keyout "$work/new.key" -out "$work/new.crt" 2>/dev/null
kubectl create namespace genesys --dry-run=client -o yaml | kubectl apply -f -
kubectl -n genesys create deployment cobrowse-node --image=genesys/cobrowse:8.5 --replicas=2 \
  --dry-run=client -o yaml | kubectl apply -f -
# The example targets a StatefulSet; the demo uses the Deployment it just made.
sed 's/{kind: StatefulSet, name: cobrowse-node}/{kind: Deployment, name: cobrowse-node}/' \
  examples/jks.yaml | kubectl apply -f -
kubectl -n genesys wait cobrowsetls/cobrowse --for=condition=Ready --timeout=60s
kubectl -n genesys get cobrowsetls -o wide
kubectl -n genesys get secret cobrowse-truststore -o jsonpath='{.data.truststore\.jks}' \
  | base64 -d >"$work/truststore.jks"
keytool -list -keystore "$work/truststore.jks" -storepass change-me-to-a-long-random-string \
  | grep -E 'trustedCertEntry|entries'
kubectl -n genesys get configmap cobrowse-security -o jsonpath='{.data.security\.cfg}'
kubectl -n genesys get deployment cobrowse-node \
  -o jsonpath='restarted-for: {.spec.template.metadata.annotations.tls\.cobrowse\.io/restarted-for}{"\n"}'

step "Rotating the CA: the operator rewrites the trust store and rolls the Deployment once"
kubectl -n genesys create secret generic genesys-ca --from-file=certificateCA.crt="$work/new.crt" \
  --dry-run=client -o yaml | kubectl apply -f -
sleep 3
kubectl -n genesys rollout status deployment/cobrowse-node --timeout=60s
kubectl -n genesys get cobrowsetls cobrowse -o jsonpath='{range .status.trustStore.certificates[*]}{.alias}{"\t"}{.subject}{"\n"}{end}'
kubectl -n genesys get replicasets -l app=cobrowse-node
kubectl -n genesys get events --field-selector involvedObject.name=cobrowse \
  --sort-by=.lastTimestamp | tail -n 8

step "Bad input is reported and changes nothing"
kubectl -n genesys create secret generic genesys-ca --from-literal=certificateCA.crt=garbage \
  --dry-run=client -o yaml | kubectl apply -f -
sleep 2
kubectl -n genesys get cobrowsetls cobrowse \
  -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}'

if ((keep)); then
  echo
  echo "Left running. export KUBECONFIG=$KUBECONFIG"
  echo "Stop: kill $op_pid; .venv/bin/cobrowse-tls dev-cluster down --dir $dir"
else
  step "Done: stopping the operator and the control plane"
fi
