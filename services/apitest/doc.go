// Package apitest holds the REST API's end-to-end tests: a real cluster
// in network namespaces, called from a client host as a user or script
// would, against the OpenAPI document the front door serves.
package apitest
