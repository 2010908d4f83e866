// SignDockerManifestWithPrivateKeyFileUnstable, reinstated for mlfs's
// test reference: Debian's disable-sigstore.patch replaces sign.go with
// a stub and empties copied.go (cosign's private-key reader).  build.sh
// replaces the stub with this file.  The semantics are upstream
// v5.23.1's, with cosign's key format as go-tuf v0.5.1's encrypted
// package reads it; the code is mlfs's, on Go's standard library and
// golang.org/x/crypto (scrypt, nacl/secretbox) alone.

package sigstore

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/containers/image/v5/docker/reference"
	"github.com/containers/image/v5/internal/signature"
	"github.com/containers/image/v5/manifest"
	"github.com/containers/image/v5/signature/internal"
	"golang.org/x/crypto/nacl/secretbox"
	"golang.org/x/crypto/scrypt"
)

// cosign's encrypted private key: PEM "ENCRYPTED COSIGN PRIVATE KEY"
// around this JSON ([]byte fields base64, as encoding/json writes them);
// the plaintext is the key in PKCS#8 DER.
type encryptedKey struct {
	KDF struct {
		Name   string `json:"name"` // "scrypt"
		Params struct {
			N int `json:"N"`
			R int `json:"r"`
			P int `json:"p"`
		} `json:"params"`
		Salt []byte `json:"salt"`
	} `json:"kdf"`
	Cipher struct {
		Name  string `json:"name"` // "nacl/secretbox"
		Nonce []byte `json:"nonce"`
	} `json:"cipher"`
	Ciphertext []byte `json:"ciphertext"`
}

func decryptCosignKey(text, passphrase []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(text)
	if block == nil {
		return nil, errors.New("invalid pem block")
	}
	if block.Type != "ENCRYPTED COSIGN PRIVATE KEY" {
		return nil, fmt.Errorf("unsupported pem type: %s", block.Type)
	}
	var e encryptedKey
	if err := json.Unmarshal(block.Bytes, &e); err != nil {
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	if e.KDF.Name != "scrypt" || e.Cipher.Name != "nacl/secretbox" {
		return nil, fmt.Errorf("decrypt: encrypted: unknown kdf %q or cipher %q", e.KDF.Name, e.Cipher.Name)
	}
	// go-tuf accepts exactly the parameters it writes.
	if e.KDF.Params.N != 32768 || e.KDF.Params.R != 8 || e.KDF.Params.P != 1 {
		return nil, errors.New("decrypt: encrypted: unexpected kdf parameters")
	}
	if len(e.Cipher.Nonce) != 24 {
		return nil, errors.New("decrypt: encrypted: incorrect nonce size")
	}
	k, err := scrypt.Key(passphrase, e.KDF.Salt, e.KDF.Params.N, e.KDF.Params.R, e.KDF.Params.P, 32)
	if err != nil {
		return nil, fmt.Errorf("decrypt: %w", err)
	}
	var key [32]byte
	var nonce [24]byte
	copy(key[:], k)
	copy(nonce[:], e.Cipher.Nonce)
	der, ok := secretbox.Open(nil, e.Ciphertext, &nonce, &key)
	if !ok {
		return nil, errors.New("decrypt: encrypted: decryption failed")
	}
	priv, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("parsing private key: %w", err)
	}
	switch priv.(type) {
	case *ecdsa.PrivateKey, *rsa.PrivateKey, ed25519.PrivateKey:
		return priv.(crypto.Signer), nil
	}
	return nil, errors.New("unsupported key type")
}

// signPayload signs as sigstore's signers with SHA-256: ECDSA (ASN.1) and
// RSA PKCS#1 v1.5 over the payload's SHA-256, Ed25519 over the payload.
func signPayload(signer crypto.Signer, payload []byte) ([]byte, error) {
	if _, ok := signer.(ed25519.PrivateKey); ok {
		return signer.Sign(rand.Reader, payload, crypto.Hash(0))
	}
	h := crypto.SHA256.New()
	h.Write(payload)
	return signer.Sign(rand.Reader, h.Sum(nil), crypto.SHA256)
}

// SignDockerManifestWithPrivateKeyFileUnstable returns a signature for manifest as the specified dockerReference,
// using a private key and an optional passphrase.
func SignDockerManifestWithPrivateKeyFileUnstable(m []byte, dockerReference reference.Named, privateKeyFile string, passphrase []byte) (signature.Sigstore, error) {
	text, err := os.ReadFile(privateKeyFile)
	if err != nil {
		return signature.Sigstore{}, fmt.Errorf("reading private key from %s: %w", privateKeyFile, err)
	}
	signer, err := decryptCosignKey(text, passphrase)
	if err != nil {
		return signature.Sigstore{}, fmt.Errorf("initializing private key: %w", err)
	}
	if reference.IsNameOnly(dockerReference) {
		return signature.Sigstore{}, fmt.Errorf("reference %s can’t be signed, it has neither a tag nor a digest", dockerReference.String())
	}
	d, err := manifest.Digest(m)
	if err != nil {
		return signature.Sigstore{}, err
	}
	// Unlike cosign, the identity keeps the tag (as simple signing does).
	payload, err := json.Marshal(internal.NewUntrustedSigstorePayload(d, dockerReference.String()))
	if err != nil {
		return signature.Sigstore{}, err
	}
	sig, err := signPayload(signer, payload)
	if err != nil {
		return signature.Sigstore{}, fmt.Errorf("creating signature: %w", err)
	}
	return signature.SigstoreFromComponents(signature.SigstoreSignatureMIMEType, payload,
		map[string]string{signature.SigstoreSignatureAnnotationKey: base64.StdEncoding.EncodeToString(sig)}), nil
}
