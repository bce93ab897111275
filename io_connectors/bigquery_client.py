"""A BigQuery client for the service, or for an emulator at `endpoint` (no credentials needed)."""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["bigquery_client"]


def bigquery_client(project: str, endpoint: Optional[str]) -> Any:
    from google.cloud import bigquery

    if not endpoint:
        return bigquery.Client(project=project)
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials

    url = endpoint if "://" in endpoint else f"http://{endpoint}"
    return bigquery.Client(project=project, credentials=AnonymousCredentials(),
                           client_options=ClientOptions(api_endpoint=url))
