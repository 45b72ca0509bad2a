"""An image's ``__main__.py``: verify the image, seal it, then boot it.

`malv build` copies this file into every image as its ``__main__.py``, so
``python IMAGE`` runs it first.  It uses only the standard library (hashlib,
zipfile, json) and imports nothing from the image until every member's
sha256 matches the image's index: a corrupted, truncated or tampered image
is refused, with one line naming the member, before any of its code runs.
The zip's comment seals the rest: the sha256 of every byte before it, so a
change outside the members (a header's date, the directory) is refused too.
`malv boot IMAGE` calls the same `verify` in the host process.

Sealing keeps the image's own packages from being found anywhere else (an
installed malvos, a source tree on the path): inside an image, ``kernel``
and the rest come from the zip or not at all.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import os
import sys
import zipfile

#: The member that lists every other member's sha256.
INDEX = "MALVOS-INDEX.json"
#: The seal: the zip comment, the hex sha256 of every byte before it.
SEAL_BYTES = 64
#: The packages an image holds; sealed against copies outside it.
SEALED = ("kernel", "drivers", "userland", "mlaas_modules", "image", "bench", "exp")


class ImageRefused(Exception):
    """The image failed verification; the message (one line) names the member."""


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify(path: str) -> dict:
    """The image's index, once every member matches it; else `ImageRefused`."""
    try:
        archive = zipfile.ZipFile(path)
    except Exception as exc:  # a broken zip fails in many ways; all mean the same here
        raise ImageRefused(f"{path}: not a malvos image ({_one_line(exc)})") from None
    with archive:
        index = _read_index(path, archive)
        _check_members(path, archive, index["members"])
    if not sealed(path):
        raise ImageRefused(f"{path}: not a malvos image (changed outside its members)")
    return index


def seal(data: bytes) -> bytes:
    """The seal of an image's bytes (their last SEAL_BYTES are the seal's place)."""
    return hashlib.sha256(data[:-SEAL_BYTES]).hexdigest().encode()


def sealed(path: str) -> bool:
    with open(path, "rb") as f:
        data = f.read()
    return len(data) > SEAL_BYTES and data[-SEAL_BYTES:] == seal(data)


def _read_index(path: str, archive: zipfile.ZipFile) -> dict:
    try:
        names = archive.namelist()
    except Exception as exc:
        raise ImageRefused(f"{path}: not a malvos image ({_one_line(exc)})") from None
    if INDEX not in names:
        raise ImageRefused(f"{path}: not a malvos image (it has no {INDEX})")
    try:
        index = json.loads(archive.read(INDEX))
        members = index["members"]
        valid = all(type(k) is str and type(v) is str for k, v in members.items())
    except Exception:
        valid = False
    if not valid:
        raise ImageRefused(f"{path}: member {INDEX} is not a valid index")
    return index


def _check_members(path: str, archive: zipfile.ZipFile, members: dict) -> None:
    names = [n for n in archive.namelist() if n != INDEX]
    for name in names:
        if names.count(name) > 1:
            raise ImageRefused(f"{path}: member {name} appears twice")
        if name not in members:
            raise ImageRefused(f"{path}: member {name} is not in the index (added)")
    for name in members:
        if name not in names:
            raise ImageRefused(f"{path}: member {name} is missing")
    for name in names:
        try:
            data = archive.read(name)
        except Exception as exc:
            raise ImageRefused(f"{path}: member {name} is corrupt ({_one_line(exc)})") from None
        if digest(data) != members[name]:
            raise ImageRefused(f"{path}: member {name} was changed (its sha256 differs)")


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class SealedFinder:
    """Finds the sealed packages in the image only (first on sys.meta_path)."""

    def __init__(self, image: str) -> None:
        self.image = image

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname.partition(".")[0] not in SEALED:
            return None
        search = list(path) if path is not None else [self.image]
        spec = importlib.machinery.PathFinder.find_spec(fullname, search)
        if spec is None:
            raise ModuleNotFoundError(f"No module named {fullname!r} in this image", name=fullname)
        return spec


def seal_imports(image: str) -> None:
    sys.meta_path.insert(0, SealedFinder(image))
    if image not in sys.path:
        sys.path.insert(0, image)


def main() -> int:
    image = os.path.dirname(os.path.abspath(__file__))
    try:
        verify(image)
    except ImageRefused as exc:
        print(f"malv: refused {exc}", file=sys.stderr)
        return 2
    seal_imports(image)
    if sys.argv[1:2] == ["lab"]:
        return lab(sys.argv[2:])
    from image.runtime import main as boot

    return boot(image, sys.argv[1:])


def lab(argv: list[str]) -> int:
    """``python3 IMAGE lab list|start NAME|grade NAME [DIR]``, in an image that
    carries the labs (the course image); `malv lab`'s own code."""
    try:
        from image import labs
    except ModuleNotFoundError:
        print("malv: this image carries no labs (the course image does)", file=sys.stderr)
        return 2
    if len(argv) > 3:
        return labs.main("usage", None, None)
    action, name, where = (argv + [None, None, None])[:3]
    return labs.main(action, name, where)


if __name__ == "__main__":
    sys.exit(main())
