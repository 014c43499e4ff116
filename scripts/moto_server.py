"""moto's server with two fidelity fixes the docstore tests depend on.

1. DynamoDB requests are serialized. moto serves requests on threads but its DynamoDB backend is
   not thread-safe: concurrent TransactWriteItems deep-copy a table while another thread changes it
   ("dictionary changed size during iteration", HTTP 500), and condition checks of concurrent
   transactions can interleave. Real DynamoDB executes each transaction atomically and isolated;
   one lock around the backend restores that. Under that lock, a transaction also no longer
   deep-copies every table it touches for rollback (O(table) per call, minutes for the 800-version
   test): it saves and restores only the items it names.
2. KMS key states are enforced. moto (5.x) lets a disabled or pending-deletion key keep encrypting and decrypting. Real KMS refuses:
Encrypt/GenerateDataKey/Decrypt on a disabled key raise DisabledException, on a key pending deletion
KMSInvalidStateException (KMS API reference, "Key states of AWS KMS keys"). The docstore tests check
that behaviour, so this launcher adds exactly those checks and then runs moto's own server main.
"""

import copy
import functools
import sys
import threading
import types

from moto.core.exceptions import JsonRESTError
import moto.dynamodb.models as dynamodb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
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

_dynamodb_lock = threading.RLock()
_transact = DynamoDBBackend.transact_write_items
_no_copy = types.SimpleNamespace(deepcopy=lambda x: x)


def transact_write_items(self, transact_items):  # type: ignore[no-untyped-def]
    saved = []
    for entry in transact_items:
        op_type, op = next(iter(entry.items()))
        table = self.get_table(op["TableName"])
        key = op["Item"] if op_type == "Put" else op["Key"]
        hash_key = DynamoType(key[table.hash_key_attr])
        range_key = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
        saved.append((table, hash_key, range_key, copy.deepcopy(table.get_item(hash_key, range_key))))
    dynamodb_models.copy = _no_copy  # moto's own rollback becomes a no-op; ours is below
    try:
        return _transact(self, transact_items)
    except Exception:
        for table, hash_key, range_key, item in reversed(saved):
            bucket = table.items[hash_key] if range_key is not None else table.items
            slot = range_key if range_key is not None else hash_key
            if item is None:
                bucket.pop(slot, None)
            else:
                bucket[slot] = item
        raise
    finally:
        dynamodb_models.copy = copy


DynamoDBBackend.transact_write_items = transact_write_items


def _serialized(fn):  # type: ignore[no-untyped-def]
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        with _dynamodb_lock:
            return fn(*args, **kwargs)

    return wrapper


for _name, _fn in list(vars(DynamoDBBackend).items()):
    if callable(_fn) and not _name.startswith("_"):
        setattr(DynamoDBBackend, _name, _serialized(_fn))

if __name__ == "__main__":
    sys.exit(main())
