// VerifySigstorePayload, reinstated for mlfs's test reference: Debian's
// disable-sigstore.patch replaces its body with an error.  build.sh cuts
// the stub out of sigstore_payload.go and adds this file.  The semantics
// are upstream v5.23.1's (with sigstore/sigstore v1.4.2's LoadVerifier);
// the code is mlfs's, on Go's standard library alone.

package internal

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
)

// verifierFor is sigstore's LoadVerifier with SHA-256: ECDSA (ASN.1 DER)
// and RSA PKCS#1 v1.5 over the payload's SHA-256, Ed25519 over the
// payload itself.  Other key types have no verifier.
func verifierFor(key crypto.PublicKey) (func(payload, sig []byte) error, error) {
	sum := func(payload []byte) []byte {
		h := sigstoreHarcodedHashAlgorithm.New()
		h.Write(payload)
		return h.Sum(nil)
	}
	switch k := key.(type) {
	case *ecdsa.PublicKey:
		return func(payload, sig []byte) error {
			if !ecdsa.VerifyASN1(k, sum(payload), sig) {
				return errors.New("invalid signature when validating ASN.1 encoded signature")
			}
			return nil
		}, nil
	case *rsa.PublicKey:
		return func(payload, sig []byte) error {
			return rsa.VerifyPKCS1v15(k, sigstoreHarcodedHashAlgorithm, sum(payload), sig)
		}, nil
	case ed25519.PublicKey:
		return func(payload, sig []byte) error {
			if !ed25519.Verify(k, payload, sig) {
				return errors.New("failed to verify signature")
			}
			return nil
		}, nil
	}
	return nil, errors.New("unsupported public key type")
}

func VerifySigstorePayload(publicKey crypto.PublicKey, unverifiedPayload []byte, unverifiedBase64Signature string, rules SigstorePayloadAcceptanceRules) (*UntrustedSigstorePayload, error) {
	verify, err := verifierFor(publicKey)
	if err != nil {
		return nil, fmt.Errorf("creating verifier: %w", err)
	}
	sig, err := base64.StdEncoding.DecodeString(unverifiedBase64Signature)
	if err != nil {
		return nil, NewInvalidSignatureError(fmt.Sprintf("base64 decoding: %v", err))
	}
	if err := verify(unverifiedPayload, sig); err != nil {
		return nil, NewInvalidSignatureError(fmt.Sprintf("cryptographic signature verification failed: %v", err))
	}
	// Only now is the payload read, strictly (UnmarshalJSON, intact in Debian).
	var payload UntrustedSigstorePayload
	if err := json.Unmarshal(unverifiedPayload, &payload); err != nil {
		return nil, NewInvalidSignatureError(err.Error())
	}
	// Digest first, then identity, as upstream: it decides which refusal is reported.
	if err := rules.ValidateSignedDockerManifestDigest(payload.UntrustedDockerManifestDigest); err != nil {
		return nil, err
	}
	if err := rules.ValidateSignedDockerReference(payload.UntrustedDockerReference); err != nil {
		return nil, err
	}
	return &payload, nil
}
