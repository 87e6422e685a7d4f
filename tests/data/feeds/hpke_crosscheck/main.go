// Command hpke_crosscheck opens and seals Safeshare's confidential feed records
// with Go's standard crypto/hpke, an HPKE (RFC 9180) implementation independent
// of the `cryptography` package the broker uses. It checks the promise in
// broker/signing/feeds.py that "any HPKE implementation" opens a sealed copy:
// base mode, single shot, the suite named by the record's kem_id/kdf_id/aead_id
// (X-Wing 0x647A or DHKEM(X25519) 0x0020, HKDF-SHA256, AES-256-GCM), the private
// key exactly as the subscriber's keyring stores it (X-Wing: the 32-byte seed;
// X25519: the 32-byte scalar) and the public key as the policy lists it.
//
// tests/test_feed_hpke_interop.py builds and runs it. By hand, from this
// directory (standard library only, nothing is downloaded):
//
//	GOTOOLCHAIN=local GOFLAGS=-mod=mod go run . < cases.json
//
// Input (one JSON object on stdin, every byte string base64):
//
//	{"open": [{"kem_id": 25722, "kdf_id": 1, "aead_id": 2, "private_key": "...",
//	           "enc": "...", "ciphertext": "...", "info": "...", "aad": ""}],
//	 "seal": [{"kem_id": 32, "kdf_id": 1, "aead_id": 2, "public_key": "...",
//	           "info": "...", "plaintext": "..."}]}
//
// Output (one JSON object on stdout, one entry per case, in order):
//
//	{"opened": [{"plaintext": "...", "public_key": "..."} or {"error": "..."}],
//	 "sealed": [{"enc": "...", "ciphertext": "..."} or {"error": "..."}]}
//
// "public_key" is the public key Go derives from the private key (for X-Wing,
// its own SHAKE256 expansion of the seed). A case that fails reports its error
// and the others still run; malformed input exits 2.
package main

import (
	"crypto/hpke"
	"encoding/json"
	"fmt"
	"os"
)

type suite struct {
	KEM  uint16 `json:"kem_id"`
	KDF  uint16 `json:"kdf_id"`
	AEAD uint16 `json:"aead_id"`
}

type openCase struct {
	suite
	PrivateKey []byte `json:"private_key"`
	Enc        []byte `json:"enc"`
	Ciphertext []byte `json:"ciphertext"`
	Info       []byte `json:"info"`
	AAD        []byte `json:"aad"`
}

type sealCase struct {
	suite
	PublicKey []byte `json:"public_key"`
	Info      []byte `json:"info"`
	Plaintext []byte `json:"plaintext"`
}

type opened struct {
	Plaintext *[]byte `json:"plaintext,omitempty"` // a pointer: an empty plaintext is still written
	PublicKey []byte  `json:"public_key,omitempty"`
	Error     string  `json:"error,omitempty"`
}

type sealed struct {
	Enc        []byte `json:"enc,omitempty"`
	Ciphertext []byte `json:"ciphertext,omitempty"`
	Error      string `json:"error,omitempty"`
}

func (s suite) resolve() (hpke.KEM, hpke.KDF, hpke.AEAD, error) {
	kem, err := hpke.NewKEM(s.KEM)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("kem_id 0x%04x: %w", s.KEM, err)
	}
	kdf, err := hpke.NewKDF(s.KDF)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("kdf_id 0x%04x: %w", s.KDF, err)
	}
	aead, err := hpke.NewAEAD(s.AEAD)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("aead_id 0x%04x: %w", s.AEAD, err)
	}
	return kem, kdf, aead, nil
}

func open(c openCase) (opened, error) {
	kem, kdf, aead, err := c.resolve()
	if err != nil {
		return opened{}, err
	}
	// DeserializePrivateKey (RFC 9180 section 7.1.2; X-Wing: the seed).
	priv, err := kem.NewPrivateKey(c.PrivateKey)
	if err != nil {
		return opened{}, fmt.Errorf("private key: %w", err)
	}
	r, err := hpke.NewRecipient(c.Enc, priv, kdf, aead, c.Info)
	if err != nil {
		return opened{}, fmt.Errorf("enc: %w", err)
	}
	pt, err := r.Open(c.AAD, c.Ciphertext)
	if err != nil {
		return opened{}, err
	}
	if pt == nil {
		pt = []byte{}
	}
	return opened{Plaintext: &pt, PublicKey: priv.PublicKey().Bytes()}, nil
}

func seal(c sealCase) (sealed, error) {
	kem, kdf, aead, err := c.resolve()
	if err != nil {
		return sealed{}, err
	}
	pub, err := kem.NewPublicKey(c.PublicKey)
	if err != nil {
		return sealed{}, fmt.Errorf("public key: %w", err)
	}
	enc, s, err := hpke.NewSender(pub, kdf, aead, c.Info)
	if err != nil {
		return sealed{}, err
	}
	ct, err := s.Seal(nil, c.Plaintext) // no AAD: the context is in info
	if err != nil {
		return sealed{}, err
	}
	return sealed{Enc: enc, Ciphertext: ct}, nil
}

func main() {
	var in struct {
		Open []openCase `json:"open"`
		Seal []sealCase `json:"seal"`
	}
	dec := json.NewDecoder(os.Stdin)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		fmt.Fprintln(os.Stderr, "hpke_crosscheck: bad input:", err)
		os.Exit(2)
	}
	out := struct {
		Opened []opened `json:"opened"`
		Sealed []sealed `json:"sealed"`
	}{Opened: []opened{}, Sealed: []sealed{}}
	for _, c := range in.Open {
		o, err := open(c)
		if err != nil {
			o = opened{Error: err.Error()}
		}
		out.Opened = append(out.Opened, o)
	}
	for _, c := range in.Seal {
		s, err := seal(c)
		if err != nil {
			s = sealed{Error: err.Error()}
		}
		out.Sealed = append(out.Sealed, s)
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "hpke_crosscheck:", err)
		os.Exit(1)
	}
}
