module cobrowse-tls.local/pause

go 1.21
