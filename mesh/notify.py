"""SNS adapter: publish to a producer's topic through its role, or to a central topic."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mesh.aws import call
from mesh.errors import AwsFailure


class SnsNotifier:
    """Publishes messages; one client per producer account, made from assumed credentials.

    ``client_for`` builds a client from the app's one client factory; ``assume`` returns
    temporary credentials for a role ARN.
    """

    def __init__(
        self,
        *,
        sts: Any,
        sns: Any,
        client_for: Callable[..., Any],
        region: str,
        role_name: str,
        topic_name: str,
    ) -> None:
        self._sts = sts
        self._sns = sns
        self._client_for = client_for
        self.region = region
        self.role_name = role_name
        self.topic_name = topic_name

    def producer_topic(self, account: str) -> str:
        return f"arn:aws:sns:{self.region}:{account}:{self.topic_name}"

    def producer_role(self, account: str) -> str:
        return f"arn:aws:iam::{account}:role/{self.role_name}"

    def _producer_client(self, account: str) -> Any:
        role = self.producer_role(account)
        found = call(
            "STS",
            "AssumeRole",
            lambda: self._sts.assume_role(RoleArn=role, RoleSessionName="mesh-marketplace-notify"),
        )
        creds = found["Credentials"]
        return self._client_for(
            "sns",
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
        )

    def publish_to_producer(self, account: str, *, subject: str, body: str) -> str:
        """Assume the producer's role, then publish to its topic; failures name which step."""
        try:
            sns = self._producer_client(account)
        except AwsFailure as exc:
            raise type(exc)(
                f"Could not assume {self.producer_role(account)}: {exc.message}", code=exc.code
            ) from exc
        topic = self.producer_topic(account)
        try:
            sent = call(
                "SNS", "Publish", lambda: sns.publish(TopicArn=topic, Subject=subject, Message=body)
            )
        except AwsFailure as exc:
            raise type(exc)(f"Could not publish to {topic}: {exc.message}", code=exc.code) from exc
        return str(sent["MessageId"])

    def publish(self, topic_arn: str, *, subject: str, body: str) -> str:
        sent = call(
            "SNS",
            "Publish",
            lambda: self._sns.publish(TopicArn=topic_arn, Subject=subject, Message=body),
        )
        return str(sent["MessageId"])
