"""moto's server with AWS KMS key-state enforcement added.

moto (5.x) lets a disabled or pending-deletion key keep encrypting and decrypting. Real KMS refuses:
Encrypt/GenerateDataKey/Decrypt on a disabled key raise DisabledException, on a key pending deletion
KMSInvalidStateException (KMS API reference, "Key states of AWS KMS keys"). The docstore tests check
that behaviour, so this launcher adds exactly those checks and then runs moto's own server main.
"""

import sys

from moto.core.exceptions import JsonRESTError
from moto.kms import models
from moto.server import main


class DisabledException(JsonRESTError):
    code = 400

    def __init__(self, arn: str) -> None:
        super().__init__("DisabledException", f"{arn} is disabled.")


class KMSInvalidStateException(JsonRESTError):
    code = 400

    def __init__(self, arn: str) -> None:
        super().__init__("KMSInvalidStateException", f"{arn} is pending deletion.")


def _check_state(backend: "models.KmsBackend", key_id: str) -> None:
    key = backend.keys[backend.any_id_to_key_id(key_id)]
    if key.key_state == "Disabled":
        raise DisabledException(key.arn)
    if key.key_state == "PendingDeletion":
        raise KMSInvalidStateException(key.arn)


_encrypt = models.KmsBackend.encrypt
_decrypt = models.KmsBackend.decrypt


def encrypt(self, key_id, plaintext, encryption_context):  # type: ignore[no-untyped-def]
    _check_state(self, key_id)
    return _encrypt(self, key_id, plaintext, encryption_context)


def decrypt(self, ciphertext_blob, encryption_context, key_id=None):  # type: ignore[no-untyped-def]
    plaintext, arn = _decrypt(self, ciphertext_blob, encryption_context, key_id)
    _check_state(self, arn)
    return plaintext, arn


models.KmsBackend.encrypt = encrypt
models.KmsBackend.decrypt = decrypt

if __name__ == "__main__":
    sys.exit(main())
