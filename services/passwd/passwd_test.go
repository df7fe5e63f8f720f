package passwd

import "testing"

// cheap keeps the tests fast; the format is the same.
var cheap = Params{MemoryKiB: 1024, Time: 1, Threads: 1}

func TestHashAndVerify(t *testing.T) {
	h, err := Hash("correct horse", cheap)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := Verify("correct horse", h); !ok || err != nil {
		t.Errorf("right password: %v %v", ok, err)
	}
	if ok, err := Verify("wrong horse", h); ok || err != nil {
		t.Errorf("wrong password: %v %v", ok, err)
	}
	h2, _ := Hash("correct horse", cheap)
	if h == h2 {
		t.Error("two hashes of one password are equal: no salt")
	}
	if _, err := Hash("", cheap); err == nil {
		t.Error("empty password hashed")
	}
}

func TestVerifyRefusesMalformed(t *testing.T) {
	for _, phc := range []string{"", "plain", "$argon2i$v=19$m=1024,t=1,p=1$c2FsdA$aGFzaA",
		"$argon2id$v=18$m=1024,t=1,p=1$c2FsdA$aGFzaA", "$argon2id$v=19$m=0,t=1,p=1$c2FsdA$aGFzaA",
		"$argon2id$v=19$m=99999999,t=1,p=1$c2FsdA$aGFzaA", "$argon2id$v=19$m=1024,t=1,p=1$!!$aGFzaA"} {
		if ok, err := Verify("x", phc); ok || err == nil {
			t.Errorf("Verify(%q) = %v, %v", phc, ok, err)
		}
	}
}

func FuzzVerify(f *testing.F) {
	h, _ := Hash("pw", cheap)
	f.Add("pw", h)
	f.Fuzz(func(t *testing.T, pw, phc string) {
		_, _ = Verify(pw, phc) // must not panic or allocate without bound
	})
}
