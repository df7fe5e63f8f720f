module github.com/tandemhci/tandem

go 1.26

require (
	github.com/google/go-cmp v0.7.0 // indirect
	golang.org/x/sync v0.18.0 // indirect
	golang.org/x/sys v0.38.0 // indirect
	gopkg.in/yaml.v3 v3.0.1 // indirect
)
