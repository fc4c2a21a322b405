package sim

import "strconv"

// nhsNumber returns the 10-digit NHS number 999 followed by the six digits of body and a
// modulus-11 check digit, or false when body has no valid check digit (the check would be
// 10). Numbers starting 999 are reserved for testing and never issued to patients.
func nhsNumber(body int) (string, bool) {
	var d [10]byte
	n := 999_000_000 + body%1_000_000
	for i := 8; i >= 0; i-- {
		d[i] = byte(n % 10)
		n /= 10
	}
	sum := 0
	for i := 0; i < 9; i++ {
		sum += int(d[i]) * (10 - i)
	}
	check := 11 - sum%11
	switch check {
	case 11:
		check = 0
	case 10:
		return "", false
	}
	d[9] = byte(check)
	b := make([]byte, 10)
	for i := range d {
		b[i] = '0' + d[i]
	}
	return string(b), true
}

// validNHSNumber reports whether s is ten digits with a correct modulus-11 check digit.
func validNHSNumber(s string) bool {
	if len(s) != 10 {
		return false
	}
	if _, err := strconv.ParseUint(s, 10, 64); err != nil {
		return false
	}
	sum := 0
	for i := 0; i < 9; i++ {
		sum += int(s[i]-'0') * (10 - i)
	}
	check := 11 - sum%11
	if check == 11 {
		check = 0
	}
	return check != 10 && int(s[9]-'0') == check
}
