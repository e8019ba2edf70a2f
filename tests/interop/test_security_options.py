"""security-options.cfg against keytool: the store it names opens with the password it names.

The file is what an administrator imports into the application object (the manual's step 7);
Co-browse then opens `trusted-ca` with `truststore-password`. keytool must be on PATH.
"""

from __future__ import annotations

import configparser
import subprocess
from pathlib import Path

import pytest

import pki as p
from cobrowse_tls import passwords
from cobrowse_tls.api import models
from cobrowse_tls.core import render
from tls_servers import tool

pytestmark = pytest.mark.interop


@pytest.mark.parametrize(
    "password", [passwords.generate(), "pass=word with spaces;#[x]"], ids=["generated", "odd"]
)
def test_the_options_file_opens_the_store_it_names(
    pki: p.PKI, tmp_path: Path, password: str
) -> None:
    mount = tmp_path / "security"  # stands for the Secret mounted at truststore.mountPath
    tls = models.parse(
        {
            "apiVersion": models.API_VERSION,
            "kind": models.KIND,
            "metadata": {"name": "cb", "namespace": "genesys"},
            "spec": {
                "provider": "JKS",
                "application": {"type": "Node", "name": "CB_Node_1", "version": "8.5.002"},
                "trustedCA": {"sources": [{"inline": p.pem(pki.root, pki.intermediate).decode()}]},
                "truststore": {"mountPath": str(mount)},
            },
        }
    )
    sources = render.resolve_sources(tls, render.ObjectData(secrets={}, config_maps={}))
    rendered = render.render(tls, sources, password=password, now=pki.now)
    mount.mkdir()
    for name in render.SECRET_FILES:
        (mount / name).write_bytes(rendered.files[name])

    # Read the file as an INI importer does: one [security] section of option=value lines.
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep option case
    parser.read_string((mount / "security-options.cfg").read_text())
    assert parser.sections() == ["security"]
    options = dict(parser["security"])
    assert set(options) == {"provider", "trusted-ca", "truststore-password"}
    assert options["provider"] == "JKS"
    assert options["trusted-ca"] == str(mount / "truststore.jks")

    listing = subprocess.run(
        [
            tool("keytool"),
            "-list",
            "-keystore",
            options["trusted-ca"],
            "-storepass",
            options["truststore-password"],
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert listing.count("trustedCertEntry") == 2
    # And a wrong password does not: the check above proves the password, not just the path.
    wrong = subprocess.run(
        [tool("keytool"), "-list", "-keystore", options["trusted-ca"], "-storepass", "x" * 8],
        capture_output=True,
        text=True,
        check=False,
    )
    assert wrong.returncode != 0
