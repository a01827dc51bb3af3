"""Names vulture cannot see used (read by a framework, by SQL, or by tests); checked with the code.

Run: ``vulture`` (settings in pyproject.toml's [tool.vulture]). Each entry says who uses the name.
Add a name here only when that user is outside Python calls vulture can follow.
"""

# ruff: noqa
from tokensmith.clock import FrozenClock
from tokensmith.db import models
from tokensmith.logs import JsonFormatter
from tokensmith.server import build_app
from tokensmith.usecases.base import UnitsOfWork
from tokensmith.verify.cache import VerificationCache

FrozenClock  # the test suite's clock (tests/conftest.py); part of the Clock protocol's API
VerificationCache.negative_size  # tests/test_verify_cache.py checks the negative cache stays bounded
JsonFormatter.format  # logging.Formatter hook, called by the logging module
UnitsOfWork.__call__  # AppContext.unit_of_work() calls the factory: ctx.units()
build_app  # uvicorn's app factory, named as the string "tokensmith.server:build_app"

# SQLAlchemy TypeDecorator hooks and settings, called by SQLAlchemy.
models.UTCDateTime.impl
models.UTCDateTime.cache_ok
models.UTCDateTime.process_bind_param
models.UTCDateTime.process_result_value

# Columns written by the ORM and read by SQL, exports, backups and the audit/console templates.
_.last_used_ip
_.vpc_id
_.updated_at
_.last_error
_.delivered_at
_.first_seen_at

# Pydantic settings and response-model fields, serialized by FastAPI into the JSON answers.
_.model_config
_.kubeconfig_filename
_.tokenreview_path
_.accessKeyId
_.secretKey
_.createdAt
_.mintedByToken
_.AccessKeyId
_.SecretAccessKey
_.Expiration

# FastAPI: a documented RFC 7662 form parameter the route accepts and ignores.
_.token_type_hint
# console/routes.py imports console.audit_page for its side effect (registers the pages).
_.audit_page
# ... and console.device (the /device sign-in page).
_.device
# When a device sign-in request was approved or denied: kept for operators reading the table.
_.decided_at
_.service_accounts  # and console.service_accounts, for the same reason

# Response fields of the S3 verify answer (pydantic serializes them; gateways read them).
_.signingKey
_.seedSignature
_.amzDate
# The reference decoder of signed upload chunks (docs/object-storage.md; tests/test_sigv4_streaming.py).
from tokensmith.objectstore.sigv4 import decode_signed_chunks

decode_signed_chunks

# prometheus_client calls a registered collector's collect() at every scrape (tokensmith.metrics).
from tokensmith import metrics

metrics._Collector.collect
# Response fields of trust policies and tokens (pydantic serializes them; API clients read them).
_.inline_jwks
_.federated
# uvicorn's RequestResponseCycle reads these after tokensmith.protocols' cycle sets them, and the
# protocol makes each cycle its own by setting its class.
_.waiting_for_100_continue
_.expected_content_length
_.chunked_encoding
_.__class__
