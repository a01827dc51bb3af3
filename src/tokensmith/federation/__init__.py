"""Service accounts and workload identity federation (issue 15).

* ``accounts``: service accounts (``svc_…``), organization-owned principals with no password.
* ``claims``: the claim conditions of a trust policy (JSON pointers, ``*``/``**`` globs).
* ``jwks``: the issuers' signing keys, discovered and cached, or given inline.
* ``verification``: an external JWT checked with those keys (asymmetric algorithms only).
* ``policies``: trust policies, which map an issuer's tokens to a service account.
* ``exchange``: an external JWT in, a short-lived tokensmith token (and S3 keys) out.
"""
