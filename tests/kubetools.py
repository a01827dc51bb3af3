"""The real kubectl for tests: the gcloud dispatcher's pinned binary when present, else PATH's."""

from __future__ import annotations

import os
import shutil

from tests.conftest import require

# The dispatcher (/usr/bin/kubectl) sends an extra GET /version first; the pinned binary does not.
PINNED_KUBECTL = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32"


def kubectl_binary() -> str:
    found = PINNED_KUBECTL if os.access(PINNED_KUBECTL, os.X_OK) else shutil.which("kubectl")
    require(found is not None, "kubectl is not installed (Debian: apt-get install kubernetes-client)")
    assert found is not None
    return found
