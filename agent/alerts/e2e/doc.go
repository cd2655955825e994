// Package e2e holds the end-to-end test of alert enrichment: the XAPI
// simulator plays the threat-model, the real agent pipeline traces it, and
// alerts are enriched through the shipped detector plugins. It is a package
// of its own so that agent/alerts' tests do not depend on the simulator.
package e2e
