"""Sealed snapshot files: a host key, and a MAC over the whole file.

A snapshot is a file, and a file is input from outside: anyone who can write
it can change it, and a bare hash of its contents proves nothing, since the
changer recomputes it.  So each file is sealed with HMAC-SHA256 under a key
of the host's that never travels inside a snapshot, and a file is opened
only after its MAC checks, before a byte of it is decompressed or decoded.
A restore of another host's snapshot names that host's key on purpose
(`vm restore FILE --key KEYFILE`).

The key is 32 random bytes, kept as 64 hex digits in a file only its owner
may read, found in this order:

* the file named by $MALV_SNAPSHOT_KEY_FILE;
* ``$XDG_STATE_HOME/malvos/snapshot.key``, or ``~/.local/state/malvos/snapshot.key``,

and created there on first use (mode 0600, in a directory of mode 0700).

File format: ``MAGIC | version (u16) | body length (u64) | MAC | body``,
the MAC being HMAC-SHA256 of everything before it and the body, and the body
zlib-compressed msgpack of plain values.  Every refusal is a `SnapshotError`
of one line.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import struct
import zlib
from typing import Any

import msgpack

KEY_ENV = "MALV_SNAPSHOT_KEY_FILE"
KEY_BYTES = 32
MAGIC = b"MALVSNAP"
FORMAT_VERSION = 2  # 1: a bare SHA-256 of the body
_HEADER = struct.Struct("<8sHQ")
_MAC_BYTES = 32
MAX_BODY_BYTES = 64 << 20  # a file's compressed body
MAX_IMAGE_BYTES = 64 << 20  # the body decompressed (and so what msgpack decodes)


class SnapshotError(Exception):
    """A snapshot could not be taken, read or restored; the message says why, in one line."""


# -- the key ------------------------------------------------------------------------------------


def key_path() -> str:
    """Where this host's snapshot key is (it need not exist yet)."""
    given = os.environ.get(KEY_ENV)
    if given:
        return os.path.abspath(os.path.expanduser(given))
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(os.path.abspath(state), "malvos", "snapshot.key")


def host_key() -> bytes:
    """This host's snapshot key, made on first use."""
    path = key_path()
    if not os.path.lexists(path):
        _make_key(path)
    mode = _stat_key(path).st_mode
    if mode & 0o077:
        raise SnapshotError(
            f"the snapshot key {path} may be read or written by others "
            f"(mode {stat.S_IMODE(mode):04o}): chmod 600 it"
        )
    return read_key(path)


def read_key(path: str) -> bytes:
    """The key in the file at `path` (this host's, or another's for `--key`)."""
    st = _stat_key(path)
    if not stat.S_ISREG(st.st_mode) or st.st_size > 4096:
        raise SnapshotError(f"{path} is not a snapshot key file")
    try:
        with open(path, "rb") as f:
            text = f.read(4097).strip()
        key = bytes.fromhex(text.decode("ascii"))
    except OSError as exc:
        raise SnapshotError(f"cannot read the snapshot key {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise SnapshotError(f"{path} is not a snapshot key file (hex digits)") from None
    if len(key) < KEY_BYTES:
        raise SnapshotError(f"the snapshot key {path} is {len(key)} bytes; at least {KEY_BYTES}")
    return key


def _stat_key(path: str) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as exc:
        raise SnapshotError(f"cannot read the snapshot key {path}: {exc.strerror or exc}") from None


def _make_key(path: str) -> None:
    """Write a new key to `path` whole, or leave the one another process made
    meanwhile: the key is written to a file of its own and linked into place."""
    directory = os.path.dirname(path)
    tmp = f"{path}.new{os.getpid()}"
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(KEY_BYTES) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    except OSError as exc:
        raise SnapshotError(f"cannot make the snapshot key {path}: {exc.strerror or exc}") from None
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


# -- files --------------------------------------------------------------------------------------


def _mac(key: bytes, header: bytes, body: bytes) -> bytes:
    mac = hmac.new(key, header, hashlib.sha256)
    mac.update(body)
    return mac.digest()


def write(path: str, image: Any, key: bytes) -> int:
    """Seal `image` into `path` (atomically: a reader never sees half a file); its size."""
    try:
        packed = msgpack.packb(image, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise SnapshotError(
            f"the snapshot of {path} holds a value it cannot store: {exc}"
        ) from None
    body = zlib.compress(packed, 6)
    if len(packed) > MAX_IMAGE_BYTES or len(body) > MAX_BODY_BYTES:
        raise SnapshotError(f"the snapshot is {len(packed)} bytes, more than a snapshot may hold")
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, len(body))
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(_mac(key, header, body))
            f.write(body)
        os.replace(tmp, path)
    except OSError as exc:
        raise SnapshotError(f"cannot write the snapshot {path}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return _HEADER.size + _MAC_BYTES + len(body)


def read(path: str, key: bytes, other_key: bool = False) -> Any:
    """The decoded contents of the sealed file at `path`: plain values, not
    yet checked (snapshot.check_image does that).  SnapshotError, in one
    line, for a file that is not a snapshot, or whose MAC does not check."""
    body = _authentic_body(path, key, other_key)
    try:
        inflate = zlib.decompressobj()
        packed = inflate.decompress(body, MAX_IMAGE_BYTES)
        if inflate.unconsumed_tail:
            raise SnapshotError(f"{path} decompresses to more than a snapshot may hold")
        return msgpack.unpackb(packed, raw=False, strict_map_key=False, use_list=True)
    except SnapshotError:
        raise
    except Exception as exc:  # an authentic body that does not decode: not ours
        raise SnapshotError(f"{path} does not decode as a snapshot: {type(exc).__name__}") from None


def _authentic_body(path: str, key: bytes, other_key: bool) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise SnapshotError(f"cannot read the snapshot {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SnapshotError(f"{path} is not a regular file")
        try:
            header = f.read(_HEADER.size)
            if len(header) < _HEADER.size or header[:8] != MAGIC:
                raise SnapshotError(f"{path} is not a malvos snapshot")
            _magic, version, length = _HEADER.unpack(header)
            if version != FORMAT_VERSION:
                raise SnapshotError(
                    f"{path} is a snapshot of format version {version}; "
                    f"this malvos reads version {FORMAT_VERSION}"
                )
            if length > MAX_BODY_BYTES:
                raise SnapshotError(f"{path} claims a body of {length} bytes: corrupted")
            mac = f.read(_MAC_BYTES)
            body = f.read(length + 1)
        except OSError as exc:
            raise SnapshotError(f"cannot read the snapshot {path}: {exc.strerror or exc}") from None
    if len(mac) < _MAC_BYTES or len(body) < length:
        raise SnapshotError(f"{path} is truncated: {len(body)} of {length} bytes")
    if len(body) > length:
        raise SnapshotError(f"{path} has bytes past its end: corrupted")
    if not hmac.compare_digest(_mac(key, header, body), mac):
        whose = "the key given" if other_key else "this host's snapshot key"
        raise SnapshotError(
            f"{path} was not sealed with {whose}, or was changed since: refused "
            "(another host's snapshot restores with --key KEYFILE)"
        )
    return body
