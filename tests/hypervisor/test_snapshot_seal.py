"""Snapshots are sealed with a host key: HMAC-SHA256 over the whole file, a
key made on first use that only its owner may read and that never travels
in a snapshot.  An altered file, or one sealed with another key, is refused
in one line before a byte of it is decoded; `--key` restores another host's
snapshot on purpose."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import struct

import pytest

from kernel.hypervisor import seal
from kernel.hypervisor import snapshot as snapshots
from kernel.hypervisor.snapshot import SnapshotError

HEADER = struct.Struct("<8sHQ")  # magic, version, body length; then the MAC, then the body


@pytest.fixture
def decoding(monkeypatch):
    """Records every decompression and decoding of a snapshot body."""
    calls: list[str] = []
    decompressobj, unpackb = seal.zlib.decompressobj, seal.msgpack.unpackb

    def watched_decompressobj(*args, **kwargs):
        calls.append("decompress")
        return decompressobj(*args, **kwargs)

    def watched_unpackb(*args, **kwargs):
        calls.append("unpack")
        return unpackb(*args, **kwargs)

    monkeypatch.setattr(seal.zlib, "decompressobj", watched_decompressobj)
    monkeypatch.setattr(seal.msgpack, "unpackb", watched_unpackb)
    return calls


def refused(host, path, key_file=None) -> str:
    with pytest.raises(SnapshotError) as err:
        host.hv.restore(str(path), key_file)
    message = str(err.value)
    assert "\n" not in message and "g" not in host.hv.vms
    return message


def test_the_host_key_is_made_on_first_use_for_its_owner_alone(host, tmp_path, monkeypatch):
    monkeypatch.delenv(seal.KEY_ENV)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    vm = host.hv.create("g").start()
    vm.snapshot(str(tmp_path / "g.snap"))
    key = tmp_path / "state" / "malvos" / "snapshot.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert len(bytes.fromhex(key.read_text())) == seal.KEY_BYTES
    made = key.read_text()
    vm.snapshot(str(tmp_path / "g2.snap"))  # the same key, not a new one
    assert key.read_text() == made and sorted(os.listdir(key.parent)) == ["snapshot.key"]
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert seal.key_path() == str(
        tmp_path / "home" / ".local" / "state" / "malvos" / "snapshot.key"
    )
    vm.snapshot(str(tmp_path / "g3.snap"))
    assert os.path.exists(seal.key_path())


def test_the_key_never_travels_in_a_snapshot(saved):
    host, path = saved
    key = seal.host_key()
    data = path.read_bytes()
    assert key not in data and key.hex().encode() not in data
    assert seal.KEY_ENV not in data.decode("latin-1")


@pytest.mark.parametrize("where", ["header", "mac", "body", "last"])
def test_an_altered_file_is_refused_before_it_is_decoded(saved, tmp_path, decoding, where):
    host, path = saved
    blob = bytearray(path.read_bytes())
    at = {"header": 9, "mac": HEADER.size + 5, "body": HEADER.size + 40, "last": len(blob) - 1}
    blob[at[where]] ^= 0x40  # (byte 9: the version's high byte, read as another version)
    (tmp_path / "bad").write_bytes(bytes(blob))
    message = refused(host, tmp_path / "bad")
    assert decoding == []
    assert ("format version" if where == "header" else "was not sealed with this host's") in message


def test_a_forgery_with_a_recomputed_hash_is_refused_before_it_is_decoded(saved, decoding):
    """What defeated the bare SHA-256: change the body, put its hash where the check is."""
    host, path = saved
    blob = path.read_bytes()
    header, body = blob[: HEADER.size], bytearray(blob[HEADER.size + 32 :])
    body[-3] ^= 1
    path.write_bytes(header + hashlib.sha256(body).digest() + bytes(body))
    message = refused(host, path)
    assert message.endswith(
        "was not sealed with this host's snapshot key, or was changed since: refused "
        "(another host's snapshot restores with --key KEYFILE)"
    )
    assert decoding == []


def test_a_file_of_the_old_format_is_refused_with_its_version(saved, tmp_path):
    host, path = saved
    blob = bytearray(path.read_bytes())
    blob[8:10] = struct.pack("<H", 1)
    (tmp_path / "v1").write_bytes(bytes(blob))
    assert "format version 1; this malvos reads version 2" in refused(host, tmp_path / "v1")


def test_another_hosts_snapshot_restores_only_with_its_key(saved, tmp_path, monkeypatch):
    host, path = saved
    theirs = seal.key_path()
    monkeypatch.setenv(seal.KEY_ENV, str(tmp_path / "ours" / "snapshot.key"))
    assert "was not sealed with this host's snapshot key" in refused(host, path)
    seal.host_key()
    assert "was not sealed with the key given" in refused(host, path, seal.key_path())
    vm = host.hv.restore(str(path), theirs)
    assert vm.shell("run echo back") == "back\n"
    host.hv.destroy("g")
    out = host.shell(f"vm restore {path} --key {theirs}")
    assert out == f"vm: g: restored from {path} (running)\n"
    assert host.shell("vm restore").startswith("vm: usage:")
    assert host.shell(f"vm restore {path} --kee {theirs}").startswith("vm: usage:")


def test_a_key_others_may_read_is_refused(saved):
    host, path = saved
    os.chmod(seal.key_path(), 0o644)
    try:
        assert "may be read or written by others (mode 0644): chmod 600 it" in refused(host, path)
    finally:
        os.chmod(seal.key_path(), 0o600)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"not hex at all\n", "is not a snapshot key file (hex digits)"),
        (b"abcd\n", "is 2 bytes; at least 32"),
        (b"0" * 5000, "is not a snapshot key file"),
        (None, "cannot read the snapshot key"),
    ],
)
def test_a_key_file_that_is_not_a_key_is_refused_in_one_line(saved, tmp_path, content, words):
    host, path = saved
    key = tmp_path / "key"
    if content is not None:
        key.write_bytes(content)
    assert words in refused(host, path, str(key))
    assert words in refused(host, path, "/dev/zero" if content == b"0" * 5000 else str(key))


def test_a_snapshot_cannot_be_taken_when_no_key_can_be_made(host, tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv(seal.KEY_ENV, str(blocked / "snapshot.key"))  # under a file: no directory
    out = host.shell("vm create g; vm start g; vm snapshot g " + str(tmp_path / "g.snap"))
    assert "vm: EVM: cannot make the snapshot key" in out
    assert host.hv.get("g").shell("run echo still") == "still\n"


def test_the_mac_covers_the_whole_file(saved):
    host, path = saved
    blob = path.read_bytes()
    header, mac = blob[: HEADER.size], blob[HEADER.size : HEADER.size + 32]
    body = blob[HEADER.size + 32 :]
    assert HEADER.unpack(header)[:2] == (b"MALVSNAP", snapshots.FORMAT_VERSION)
    assert mac == hmac.new(seal.host_key(), header + body, hashlib.sha256).digest()


def test_tests_seal_with_a_session_key_never_the_users_own(malv_snapshot_key):
    assert seal.key_path() == malv_snapshot_key
    home = os.path.join(os.path.expanduser("~"), ".local", "state", "malvos")
    assert not seal.key_path().startswith(home)
