// Package monitor measures, live, whether the model still works: it joins every outcome
// (attended / did not attend) to the score that was served for that appointment, keeps the
// joined records and the scored bookings in Redis by appointment date, and reports rolling
// windows of discrimination (AUC with a DeLong 95% CI), calibration (observed/expected,
// calibration slope, Brier), DNA rate per band and per subgroup, drift of the score and of
// every feature against the training reference (PSI, missing rates), the shadow challenger
// against the champion on the same outcomes (paired DeLong), and the measured effect of the
// extra reminder between the reminded and held-out arms. Alerts mirror the Prometheus rules
// in deploy/prometheus/alerts.yml. cmd/monitor runs it as a consumer group of its own.
package monitor
