# kube-proxy needs iptables (and conntrack) next to its binary: Debian's, on the local base.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN DEBIAN_FRONTEND=noninteractive apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      iptables nftables conntrack kmod \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
COPY kube-proxy /usr/local/bin/kube-proxy
