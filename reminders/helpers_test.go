package reminders_test

import "github.com/nhsx/dnarisk/contacts"

func contactsDrama(n int) string { return contacts.Drama(n).Reveal() }
