package reminders_test

import "github.com/nhsx/dnarisk/reminders/contacts"

func contactsDrama(n int) string { return contacts.Drama(n).Reveal() }
