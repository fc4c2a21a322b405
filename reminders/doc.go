// Package reminders turns risk events and appointment changes into SMS reminders, each sent
// exactly once. The intake side (Process, run by Consume over a Kafka consumer group on the
// appointments and risk topics) merges what it learns about each appointment into Redis and
// re-plans its reminders from the Policy: standard reminders for everyone, extra ones for
// high-risk bands, none in quiet hours, too close to the appointment, after an opt-out or
// after a cancellation, and new times after a reschedule. The send side (SendDue, run by
// RunSender) takes due reminders from a sorted set, claims each one, and sends it through
// GOV.UK Notify with the reminder's id as the Notify reference, within an SMS Budget (caps
// per hour, per day and per patient, counted in Redis; sends above a cap are held).
//
// Exactly once: a reminder's id is an HMAC of (appointment, booking version, slot), so a
// replayed event plans the same reminders again and finds them already recorded. A
// reminder moves scheduled → claimed → sent (or cancelled, failed) by Lua scripts, so only
// one sender holds a claim; a claim found again after its lease ran out (a crash between
// sending and recording) or after a failure whose outcome is unknown is first looked up in
// Notify by reference, and sent only if Notify has no message with it. docs/reminders.md
// names the window that remains.
//
// All of one patient's keys share the hash tag {pseudonym}, so the scripts run in one slot
// of a Redis Cluster; the due queue is one sorted set of its own.
package reminders
