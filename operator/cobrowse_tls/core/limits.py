"""How much input the operator and ``cobrowse-tls render`` read: beyond these, bad input.

Each limit leaves room above real inputs (certifi's Mozilla bundle: about 150 certificates in
about 300 KB; a CobrowseTLS with its Secrets: a few KB) and matches the API server where it has
one, so ``render`` refuses nothing that ``kubectl apply`` would accept and the operator could
read. The README's render section lists them; a change here is a change of the public contract.
"""

from __future__ import annotations

MiB = 1024 * 1024

# The API server's own limit on all the data of one Secret or ConfigMap (core.MaxSecretSize).
OBJECT_DATA_BYTES = 1 * MiB
# One trustedCA source (a Secret or ConfigMap key, or inline PEM) cannot be larger than the
# object that holds it; all sources together are bounded too (64 sources may name one key).
SOURCE_BYTES = OBJECT_DATA_BYTES
ALL_SOURCES_BYTES = 8 * MiB
CERTIFICATES_PER_SOURCE = 1000
CERTIFICATES = 2000

# Input files of `render` (each -f, standard input included).
FILE_BYTES = 16 * MiB
# One YAML document with its aliases expanded, as kubectl would send it: the API server's
# request body limit (3 MiB) and about what go-yaml allows before "excessive aliasing".
DOCUMENT_BYTES = 3 * MiB
DOCUMENT_NODES = 200_000
# All the documents of one file: reading a node costs time (a few microseconds) even when the
# document is of a kind render does not need.
FILE_NODES = 1_000_000
# Kubernetes objects nest about ten levels; CRD schemas a few dozen.
NESTING_DEPTH = 100

TOO_LARGE = "InputTooLarge"
