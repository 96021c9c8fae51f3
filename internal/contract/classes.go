package contract

// Risk classes, from observe-only to irreversible. An intent carries its
// action type's class and a key may be granted a whole class; the action
// types themselves are registered in internal/action.
const (
	A0 = "A0" // observe (read-only)
	A1 = "A1" // reversible write
	A2 = "A2" // hard-to-reverse write
	A3 = "A3" // irreversible
)

// ValidClass reports whether c is one of A0..A3.
func ValidClass(c string) bool { return c == A0 || c == A1 || c == A2 || c == A3 }
