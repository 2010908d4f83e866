// (*prSigstoreSigned).isSignatureAccepted, reinstated for mlfs's test
// reference: Debian's disable-sigstore.patch replaces its body with an
// error.  build.sh cuts the stub out of policy_eval_sigstore.go and adds
// this file.  The semantics are upstream v5.23.1's; the code is mlfs's.

package signature

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/containers/image/v5/internal/private"
	"github.com/containers/image/v5/internal/signature"
	"github.com/containers/image/v5/manifest"
	"github.com/containers/image/v5/signature/internal"
	digest "github.com/opencontainers/go-digest"
)

// reinstatedPublicKey reads the requirement's one key as upstream does
// (sigstore/sigstore v1.4.2 cryptoutils.UnmarshalPEMToPublicKey): the
// first PEM block of the text only, a PKIX "PUBLIC KEY" or a PKCS#1
// "RSA PUBLIC KEY"; any other block is an error.
func reinstatedPublicKey(pr *prSigstoreSigned) (crypto.PublicKey, error) {
	if pr.KeyPath != "" && pr.KeyData != nil {
		return nil, errors.New(`Internal inconsistency: both "keyPath" and "keyData" specified`)
	}
	text := pr.KeyData
	if text == nil {
		// Read per signature, as upstream does (its FIXME says so).
		b, err := os.ReadFile(pr.KeyPath)
		if err != nil {
			return nil, err
		}
		text = b
	}
	block, _ := pem.Decode(text)
	if block == nil {
		return nil, errors.New("parsing public key: PEM decoding failed")
	}
	var key crypto.PublicKey
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	default:
		err = fmt.Errorf("unknown Public key PEM file type: %v", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parsing public key: %w", err)
	}
	return key, nil
}

func (pr *prSigstoreSigned) isSignatureAccepted(ctx context.Context, image private.UnparsedImage, sig signature.Sigstore) (signatureAcceptanceResult, error) {
	key, err := reinstatedPublicKey(pr)
	if err != nil {
		return sarRejected, err
	}
	b64, ok := sig.UntrustedAnnotations()[signature.SigstoreSignatureAnnotationKey]
	if !ok {
		return sarRejected, fmt.Errorf("missing %s annotation", signature.SigstoreSignatureAnnotationKey)
	}
	rules := internal.SigstorePayloadAcceptanceRules{
		// The digest is the image's (this instance's) manifest, hashed
		// here: never what a registry or the list claims it is.
		ValidateSignedDockerManifestDigest: func(signed digest.Digest) error {
			m, _, err := image.Manifest(ctx)
			if err != nil {
				return err
			}
			same, err := manifest.MatchesDigest(m, signed)
			if err != nil {
				return err
			}
			if !same {
				return PolicyRequirementError(fmt.Sprintf("Signature for digest %s does not match", signed))
			}
			return nil
		},
		ValidateSignedDockerReference: func(signed string) error {
			if !pr.SignedIdentity.matchesDockerReference(image, signed) {
				return PolicyRequirementError(fmt.Sprintf("Signature for identity %s is not accepted", signed))
			}
			return nil
		},
	}
	payload, err := internal.VerifySigstorePayload(key, sig.UntrustedPayload(), b64, rules)
	if err != nil {
		return sarRejected, err
	}
	if payload == nil {
		return sarRejected, errors.New("internal error: VerifySigstorePayload accepted nothing")
	}
	return sarAccepted, nil
}
