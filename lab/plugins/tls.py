"""Stand-in for the `tls` plugin's PrivateKey (see __init__.py): a key pair made once, kept in state, replaced
only when its algorithm changes. Outputs carry the real plugin's names and encodings."""

from __future__ import annotations

import base64
import hashlib
import os
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pulumi.provider.experimental import provider as p

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from base import StepFailed, is_unknown, own_type, plain_map, serve, wrap  # noqa: E402

VERSION = os.environ.get("KUBEADM_LIBVIRT_LAB_TLS_VERSION", "5.6.2")
PRIVATE_KEY = "tls:index/privateKey:PrivateKey"
SHAPE_INPUTS = ("algorithm", "rsaBits", "ecdsaCurve")
SECRET_OUTPUTS = ("privateKeyPem", "privateKeyOpenssh", "privateKeyPemPkcs8")
CURVES = {"P224": ec.SECP224R1, "P256": ec.SECP256R1, "P384": ec.SECP384R1, "P521": ec.SECP521R1}


def _generate(algorithm: str, rsa_bits: int, curve: str):
    if algorithm == "ED25519":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "RSA":
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    if algorithm == "ECDSA":
        return ec.generate_private_key(CURVES[curve]())
    raise StepFailed(f"algorithm {algorithm!r}: use RSA, ECDSA or ED25519")


def _encode(key) -> dict[str, str]:
    public = key.public_key()
    openssh_public = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    blob = base64.b64decode(openssh_public.split()[1])
    pkcs8 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    if isinstance(key, ed25519.Ed25519PrivateKey):
        traditional = pkcs8  # the real provider gives PKCS#8 here too: ED25519 has no "traditional" PEM form
    else:
        traditional = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    md5 = hashlib.md5(blob).hexdigest()  # noqa: S324 - a fingerprint format, not a security use
    return {
        "privateKeyPem": traditional.decode(),
        "privateKeyPemPkcs8": pkcs8.decode(),
        "privateKeyOpenssh": key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ).decode(),
        "publicKeyPem": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode(),
        "publicKeyOpenssh": openssh_public + "\n",
        "publicKeyFingerprintMd5": ":".join(md5[i : i + 2] for i in range(0, 32, 2)),
        "publicKeyFingerprintSha256": "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("="),
    }


class TlsProvider(p.Provider):
    async def configure(self, request: p.ConfigureRequest) -> p.ConfigureResponse:
        return p.ConfigureResponse(accept_secrets=True, supports_preview=True, accept_resources=True, accept_outputs=True)

    async def check(self, request: p.CheckRequest) -> p.CheckResponse:
        inputs = dict(request.new_inputs)
        defaults = {"algorithm": "RSA", "rsaBits": 2048, "ecdsaCurve": "P224"}
        for key, value in defaults.items():
            inputs.setdefault(key, wrap(value))
        return p.CheckResponse(inputs=inputs)

    async def diff(self, request: p.DiffRequest) -> p.DiffResponse:
        old, new = plain_map(request.old_state), plain_map(request.new_inputs)
        changed = [key for key in SHAPE_INPUTS if key in new and old.get(key) != new.get(key)]
        detail = {key: p.PropertyDiff(p.PropertyDiffKind.UPDATE_REPLACE, True) for key in changed}
        return p.DiffResponse(changes=bool(changed), replaces=changed, diffs=changed, detailed_diff=detail)

    async def create(self, request: p.CreateRequest) -> p.CreateResponse:
        resource_type = own_type(request.type)
        if resource_type != PRIVATE_KEY:
            raise StepFailed(f"the lab's tls stand-in implements {PRIVATE_KEY} only, not {resource_type}")
        inputs = plain_map(request.properties)
        properties = dict(request.properties)
        if request.preview or is_unknown(inputs):
            return p.CreateResponse(resource_id="", properties=properties)
        key = _generate(inputs["algorithm"], int(inputs["rsaBits"]), inputs["ecdsaCurve"])
        for name, value in _encode(key).items():
            properties[name] = wrap(value, secret=name in SECRET_OUTPUTS)
        fingerprint = properties["publicKeyFingerprintSha256"].value
        return p.CreateResponse(resource_id=hashlib.sha1(fingerprint.encode()).hexdigest(), properties=properties)

    async def read(self, request: p.ReadRequest) -> p.ReadResponse:
        # The key exists only in state, as with the real provider: refresh changes nothing.
        return p.ReadResponse(resource_id=request.resource_id, properties=request.properties, inputs=request.inputs)

    async def update(self, request: p.UpdateRequest) -> p.UpdateResponse:
        return p.UpdateResponse(properties={**request.olds, **request.news})

    async def delete(self, request: p.DeleteRequest) -> None:
        return None


if __name__ == "__main__":
    serve(VERSION, TlsProvider())
