"""The retry policy of the steps whose failures are usually passing and whose re-run is safe:
listing a stage (the network), syncing a catalog (the warehouse's lock; the MERGE is
idempotent) and scoring (each chunk's write-back is idempotent and a retry scores only the rows
still unscored). Training is not retried: a failed fit is rarely transient and costs minutes.

A failure that cannot pass (a `dg.Failure` with `allow_retries=False`: no champion, an unusable
warehouse file) fails at once. A job can override this with its own `op_retry_policy`.
"""

import dagster as dg

TRANSIENT_FAILURES = dg.RetryPolicy(
    max_retries=3, delay=2.0, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
