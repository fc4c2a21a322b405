// Package jvm holds the test that proves the Kafka Streams peer of cmd/consumer (this directory's
// Maven project, README.md) computes what the Go scorer computes; the peer itself is Java.
package jvm
