"""What the device machine's Python can import: its own packages (present.txt) and the wheelhouse
(wheels.txt); and how the wheelhouse is installed there.

``simulated_site()`` lets an interpreter here see only those distributions, so a CPU run of the
benchmark (``run.sh --smoke`` with the project's .venv, as the tests do) fails on a wheel the
wheelhouse lacks instead of the device run, where no network can fetch it.

    python device_env.py site DEST        # build the simulated site in DEST, print its path
    python device_env.py install WHEELS TARGET   # unpack wheels into TARGET (when pip is missing)
"""

from __future__ import annotations

import fnmatch
import importlib.metadata as md
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Modules of this repository, never refused.
OWN = {"fastscan", "benchmarks", "device_env", "bench"}


#: fastscan's runtime dependencies that are neither on the device machine nor in the wheelhouse, and why.
NOT_SHIPPED = {
    "imagecodecs": "a 25 MiB wheel, needed only to read compressed TIFF/SVS input; the benchmark reads Zarr and plain TIFF",
}


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_list(path: str | Path) -> list[str]:
    """The entries of a package list: one per line, ``#`` starts a comment; pins are kept."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def shipped() -> dict[str, str]:
    """``{canonical name: version}`` of wheels.txt."""
    pins = {}
    for entry in read_list(HERE / "wheels.txt"):
        name, sep, version = entry.partition("==")
        if not sep or not version:
            raise ValueError(f"wheels.txt: {entry!r} is not pinned as name==version")
        pins[canonical(name)] = version.strip()
    return pins


def present() -> list[str]:
    """Canonical names (or fnmatch patterns) of present.txt."""
    return [canonical(p) if "*" not in p else p.lower() for p in read_list(HERE / "present.txt")]


def available(dist: str) -> bool:
    """Whether distribution ``dist`` is importable on the device machine."""
    d = canonical(dist)
    return d in shipped() or any(fnmatch.fnmatch(d, p) for p in present())


def simulated_site(dest: str | Path, site_dirs: list[str] | None = None) -> Path:
    """A folder of links to what the device machine would have, taken from this interpreter's site.

    Every top-level file and folder of the distributions that are present there (present.txt) or
    shipped (wheels.txt) is linked into ``dest``; run with ``python -S`` and ``PYTHONPATH=dest:src``,
    an import of anything else fails as it would there (a module that is simply absent, so optional
    imports behave as they will on the device). Namespace folders shared by several distributions
    (``google``, ``nvidia``) come whole.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    dirs = site_dirs or [p for p in sys.path if p.endswith("site-packages")]
    for dist in md.distributions(path=dirs):
        name = dist.metadata["Name"]
        if not name or not available(name) or dist.files is None:
            continue
        for top in {f.parts[0] for f in dist.files if f.parts and f.parts[0] not in ("..", "__pycache__")}:
            src = Path(dist.locate_file(top))
            link = dest / top
            if src.exists() and not link.exists():
                link.symlink_to(src)
    return dest


def imported_distributions() -> list[str]:
    """Canonical names of the third-party distributions this process has imported."""
    mapping = md.packages_distributions()
    dists = set()
    for name in list(sys.modules):
        top = name.partition(".")[0]
        if top in OWN:
            continue
        dists.update(canonical(d) for d in mapping.get(top, []))
    return sorted(dists - {"fastscan"})


def install_wheels(wheels: str | Path, target: str | Path) -> list[str]:
    """Unpack every wheel of ``wheels`` into ``target`` (what ``pip install --target`` does for the
    wheels shipped here: their ``.data/purelib`` and ``platlib`` go to the top, scripts are left)."""
    import shutil
    import zipfile

    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    names = []
    for whl in sorted(Path(wheels).glob("*.whl")):
        with zipfile.ZipFile(whl) as zf:
            for info in zf.infolist():
                parts = Path(info.filename).parts
                if len(parts) > 2 and parts[0].endswith(".data"):
                    if parts[1] not in ("purelib", "platlib"):
                        continue
                    parts = parts[2:]
                out = target.joinpath(*parts)
                if info.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        names.append(whl.name)
    return names


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "site":
        print(simulated_site(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "install":
        print(f"unpacked {len(install_wheels(sys.argv[2], sys.argv[3]))} wheels into {sys.argv[3]}")
    else:
        sys.exit(__doc__)
