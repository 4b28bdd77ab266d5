"""An S3 bucket on a local S3 API server (moto), and the mirror's environment for it."""

from __future__ import annotations

import boto3


def bucket_env(endpoint_url: str, bucket: str) -> dict[str, str]:
    """Create `bucket` at `endpoint_url`; the environment that points the mirror at it."""
    env = {
        "AWS_STORAGE_BUCKET_NAME": bucket,
        "AWS_S3_ENDPOINT_URL": endpoint_url,
        "AWS_S3_REGION_NAME": "us-east-1",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test-secret",
    }
    boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=env["AWS_S3_REGION_NAME"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    ).create_bucket(Bucket=bucket)
    return env
