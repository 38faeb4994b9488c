"""Long-running jobs of the service: the projectors' worker, and (with the API) scheduled
calculations and webhook delivery. Each is idempotent and safe to run in several processes."""
