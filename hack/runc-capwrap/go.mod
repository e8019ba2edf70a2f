module cobrowse-tls.local/runc-capwrap

go 1.21
