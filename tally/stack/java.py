"""Java servers of the local stack (Apache Kafka, OpenSearch) run from Maven Central jars.

Java 17 and Maven come from Debian's packages when missing. Each server's jars are resolved
once by ``mvn dependency:copy-dependencies`` from a dependency-only ``pom.xml`` kept beside
this module, into a cache outside every data directory (``TALLY_CACHE_DIR``, by default
``~/.cache/tally``) keyed by the server's version and the POM's digest: ``tally stack reset``
and the separate ``make run`` and ``make test`` stacks reuse it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tally.stack.base import StackError, apt_install

FILES = Path(__file__).parent / "files"
JAVA_PACKAGE = "openjdk-17-jdk-headless"  # the JDK: the source launcher (java X.java) compiles
MAVEN_PACKAGE = "maven"
MIN_JAVA = 17


def java_major(java: str) -> int:
    """The feature version ``java -version`` reports (17 for "17.0.15")."""
    shown = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    found = re.search(r'version "(\d+)(?:\.(\d+))?', shown.stderr + shown.stdout)
    if not found:
        return 0
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major


def _java_home_binary(tool: str) -> str | None:
    home = os.environ.get("JAVA_HOME")
    path = Path(home) / "bin" / tool if home else None
    return str(path) if path and path.exists() else None


def ensure_java() -> str:
    """A ``java`` of version 17 or later that can run a source file; installed when missing."""
    java = _java_home_binary("java") or shutil.which("java")
    if java is None or not (_java_home_binary("javac") or shutil.which("javac")):
        apt_install(JAVA_PACKAGE)
        java = shutil.which("java")
    if java is None:
        raise StackError(f"java is not on PATH after installing {JAVA_PACKAGE}")
    major = java_major(java)
    if major < MIN_JAVA:
        raise StackError(
            f"{java} is Java {major}; Kafka 4 and OpenSearch 2.19 need Java {MIN_JAVA} or later:"
            f" install {JAVA_PACKAGE} or point JAVA_HOME at one"
        )
    return java


def ensure_maven() -> str:
    """``mvn``, installed from Debian's ``maven`` when missing."""
    if not shutil.which("mvn"):
        apt_install(MAVEN_PACKAGE)
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(f"mvn is not on PATH after installing {MAVEN_PACKAGE}")
    return mvn


def cache_root() -> Path:
    """Where resolved jars are kept: ``TALLY_CACHE_DIR``, else ``$XDG_CACHE_HOME/tally``."""
    configured = os.environ.get("TALLY_CACHE_DIR")
    if configured:
        return Path(configured).resolve()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "tally"


def pom_version(pom: str, prop: str) -> str:
    """The value of property ``prop`` in the POM text ``pom``."""
    found = re.search(rf"<{re.escape(prop)}>([^<]+)</{re.escape(prop)}>", pom)
    if not found:
        raise StackError(f"the POM names no <{prop}>")
    return found.group(1).strip()


def jars(name: str, version_property: str) -> Path:
    """The folder of jars for ``files/<name>.pom.xml``, resolved from Maven Central once."""
    pom = (FILES / f"{name}.pom.xml").read_text()
    version = pom_version(pom, version_property)
    digest = hashlib.sha256(pom.encode()).hexdigest()[:10]
    target = cache_root() / f"{name}-{version}-{digest}"
    if (target / "complete").exists():
        return target / "libs"
    mvn = ensure_maven()
    ensure_java()
    target.parent.mkdir(parents=True, exist_ok=True)
    print(
        f"resolving {name} {version} from Maven Central (once; cached in {target})...",
        file=sys.stderr,
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        (work / "pom.xml").write_text(pom)
        done = subprocess.run(
            [
                mvn,
                "-B",
                "-q",
                "-f",
                str(work / "pom.xml"),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={work / 'libs'}",
                "-DincludeScope=runtime",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
            raise StackError(
                f"mvn could not resolve {name} {version} from Maven Central:\n" + "\n".join(tail)
            )
        (work / "complete").write_text(f"{name} {version}\n")
        if target.exists() and not (target / "complete").exists():
            shutil.rmtree(target)  # left half-made by an interrupted run
        try:
            work.rename(target)
        except OSError:  # another stack resolved it meanwhile: keep that one
            if not (target / "complete").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target / "libs"


def classpath(libs: Path) -> str:
    """The ``-cp`` value for every jar in ``libs``."""
    return f"{libs}/*"
