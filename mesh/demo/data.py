"""The demo mesh: four producer domains, two consumer accounts, ten databases, 44 tables.

PII is marked in every way a real catalog marks it: on a whole database ("true", "yes"), on
one table, on columns only (in assorted spellings, "TRUE" among them), on a partition key,
and once with an unrecognised value that must count as PII. One database has no owner.
Three finance tables carry a `classification` (restricted, internal, and the unmapped "tbd"),
which the built-in policy ignores and examples/policies/restricted-stewards.yaml reads.
"""

from __future__ import annotations

from typing import Any

CENTRAL_ACCOUNT = "123456789012"

DOMAINS = {
    "111111111111": "Sales",
    "222222222222": "Marketing",
    "333333333333": "People",
    "555555555555": "Finance",
}
CONSUMERS = {"444455556666": "Analytics", "777788889999": "Data Science (partner)"}

PII = {"pii_flag": "true"}


def col(name: str, kind: str = "string", comment: str = "", **params: str) -> dict[str, Any]:
    column: dict[str, Any] = {"Name": name, "Type": kind}
    if comment:
        column["Comment"] = comment
    if params:
        column["Parameters"] = dict(params)
    return column


def pii(name: str, kind: str = "string", comment: str = "", flag: str = "true") -> dict[str, Any]:
    return col(name, kind, comment, pii_flag=flag)


# database name -> (description, parameters, {table: (description, columns, partition keys,
# table parameters)})
Tables = dict[str, tuple[str, list[dict[str, Any]], list[dict[str, Any]], dict[str, str]]]

_DATE = [col("order_date", "date", "partition: day of the order")]


def _sales_orders() -> Tables:
    return {
        "orders": (
            "One row per order",
            [
                col("order_id", "bigint"),
                col("customer_id", "bigint"),
                col("store_id", "int"),
                col("order_total", "decimal(12,2)"),
                col("currency", "string"),
                col("status", "string"),
            ],
            _DATE,
            {},
        ),
        "order_lines": (
            "Line items of each order",
            [
                col("order_id", "bigint"),
                col("line_no", "int"),
                col("sku", "string"),
                col("quantity", "int"),
                col("unit_price", "decimal(10,2)"),
            ],
            _DATE,
            {},
        ),
        "customers": (
            "Customer master data",
            [
                col("customer_id", "bigint"),
                pii("full_name"),
                pii("email", flag="TRUE"),
                pii("phone", flag="Yes"),
                col("country", "string"),
                col("segment", "string"),
                col("created_at", "timestamp"),
            ],
            [],
            {},
        ),
        "stores": (
            "Physical and online stores",
            [
                col("store_id", "int"),
                col("store_name"),
                col("city"),
                col("country"),
                col("opened_on", "date"),
            ],
            [],
            {},
        ),
        "returns": (
            "Returned items",
            [
                col("return_id", "bigint"),
                col("order_id", "bigint"),
                col("sku"),
                col("reason_code"),
                col("refund_amount", "decimal(10,2)"),
            ],
            _DATE,
            {},
        ),
        "daily_revenue": (
            "Revenue per store and day",
            [col("store_id", "int"), col("revenue", "decimal(14,2)"), col("orders", "int")],
            _DATE,
            {},
        ),
    }


def _sales_crm() -> Tables:
    return {
        "accounts": (
            "B2B customer accounts",
            [
                col("account_id", "bigint"),
                col("company_name"),
                col("industry"),
                col("annual_revenue", "decimal(16,2)"),
                col("owner_rep_id", "int"),
            ],
            [],
            {},
        ),
        "contacts": (
            "People at customer accounts",
            [
                col("contact_id", "bigint"),
                col("account_id", "bigint"),
                col("first_name"),
                col("last_name"),
                col("email"),
                col("job_title"),
            ],
            [],
            {},
        ),
        "opportunities": (
            "Sales pipeline",
            [
                col("opportunity_id", "bigint"),
                col("account_id", "bigint"),
                col("stage"),
                col("amount", "decimal(14,2)"),
                col("close_date", "date"),
            ],
            [],
            {},
        ),
        "activities": (
            "Calls, meetings and emails logged by reps",
            [
                col("activity_id", "bigint"),
                col("contact_id", "bigint"),
                col("kind"),
                col("notes", "string", "free text, may name people"),
                col("happened_at", "timestamp"),
            ],
            [],
            {},
        ),
    }


def _marketing_campaigns() -> Tables:
    return {
        "campaigns": (
            "Marketing campaigns",
            [
                col("campaign_id", "int"),
                col("name"),
                col("channel"),
                col("start_date", "date"),
                col("end_date", "date"),
                col("budget", "decimal(12,2)"),
            ],
            [],
            {},
        ),
        "ad_spend": (
            "Daily spend per campaign and channel",
            [
                col("campaign_id", "int"),
                col("channel"),
                col("spend", "decimal(12,2)"),
                col("impressions", "bigint"),
                col("clicks", "bigint"),
            ],
            [col("spend_date", "date")],
            {},
        ),
        "email_sends": (
            "Aggregated email campaign results",
            [
                col("campaign_id", "int"),
                col("sent", "bigint"),
                col("opened", "bigint"),
                col("clicked", "bigint"),
                col("unsubscribed", "bigint"),
            ],
            [],
            {},
        ),
        "attribution": (
            "Orders attributed to campaigns",
            [
                col("order_id", "bigint"),
                col("campaign_id", "int"),
                col("model"),
                col("weight", "double"),
            ],
            [],
            {},
        ),
        "segments": (
            "Audience segments",
            [col("segment_id", "int"), col("name"), col("definition"), col("size", "bigint")],
            [],
            {"pii_flag": "false"},
        ),
    }


def _marketing_web() -> Tables:
    return {
        "page_views": (
            "Clickstream page views",
            [
                col("event_id", "string"),
                col("session_id", "string"),
                col("url"),
                col("referrer"),
                pii("ip_address", comment="client IP", flag="TRUE"),
                col("user_agent"),
            ],
            [col("event_date", "date")],
            {},
        ),
        "sessions": (
            "Web sessions",
            [
                col("session_id"),
                pii("visitor_id", flag="1"),
                col("landing_page"),
                col("duration_seconds", "int"),
                col("device"),
            ],
            [col("event_date", "date")],
            {},
        ),
        "conversions": (
            "Conversion events",
            [col("conversion_id"), col("session_id"), col("goal"), col("value", "decimal(10,2)")],
            [col("event_date", "date")],
            {},
        ),
        "search_terms": (
            "Site search terms, aggregated daily",
            [col("term"), col("searches", "bigint"), col("results", "bigint")],
            [col("event_date", "date")],
            {},
        ),
        "geo_daily": (
            "Visits by country and day",
            [col("country"), col("region"), col("visits", "bigint")],
            [col("event_date", "date")],
            {},
        ),
    }


def _hr_people() -> Tables:
    return {
        "employees": (
            "Employee master data",
            [
                col("employee_id", "int"),
                col("full_name"),
                col("email"),
                col("date_of_birth", "date"),
                col("department_id", "int"),
                col("hire_date", "date"),
            ],
            [],
            {},
        ),
        "departments": (
            "Departments",
            [col("department_id", "int"), col("name"), col("cost_center")],
            [],
            {},
        ),
        "salaries": (
            "Salary history",
            [
                col("employee_id", "int"),
                col("salary", "decimal(12,2)"),
                col("currency"),
                col("effective_from", "date"),
            ],
            [],
            {},
        ),
        "absences": (
            "Leave and sickness",
            [
                col("employee_id", "int"),
                col("kind"),
                col("from_date", "date"),
                col("to_date", "date"),
            ],
            [],
            {},
        ),
        "headcount_monthly": (
            "Headcount by department and month",
            [col("department_id", "int"), col("month", "date"), col("headcount", "int")],
            [],
            {},
        ),
    }


def _hr_recruiting() -> Tables:
    return {
        "requisitions": (
            "Open positions",
            [
                col("requisition_id", "int"),
                col("title"),
                col("department_id", "int"),
                col("opened_on", "date"),
                col("status"),
            ],
            [],
            {},
        ),
        "candidates": (
            "Applicants",
            [
                col("candidate_id", "int"),
                col("full_name"),
                col("email"),
                col("phone"),
                col("source"),
            ],
            [],
            {"pii_flag": "yes"},
        ),
        "interviews": (
            "Interview loop results",
            [
                col("interview_id", "int"),
                col("candidate_id", "int"),
                col("interviewer_id", "int"),
                col("score", "int"),
                col("held_on", "date"),
            ],
            [],
            {},
        ),
        "funnel_weekly": (
            "Hiring funnel per week",
            [
                col("week", "date"),
                col("applied", "int"),
                col("screened", "int"),
                col("hired", "int"),
            ],
            [],
            {},
        ),
    }


def _finance_ledger() -> Tables:
    return {
        "gl_entries": (
            "General ledger entries",
            [
                col("entry_id", "bigint"),
                col("account_code"),
                col("amount", "decimal(16,2)"),
                col("currency"),
                col("posted_at", "timestamp"),
            ],
            [col("fiscal_period")],
            {"classification": "restricted"},
        ),
        "chart_of_accounts": (
            "Ledger accounts",
            [col("account_code"), col("name"), col("kind"), col("parent_code")],
            [],
            {},
        ),
        "budgets": (
            "Budget per cost center and period",
            [col("cost_center"), col("fiscal_period"), col("amount", "decimal(16,2)")],
            [],
            {"classification": "internal"},
        ),
        "fx_rates": (
            "Daily exchange rates",
            [col("currency"), col("rate_to_eur", "decimal(18,8)")],
            [col("rate_date", "date")],
            {},
        ),
        "cost_centers": (
            "Cost centers",
            [col("cost_center"), col("name"), col("owner_department_id", "int")],
            [],
            {"classification": "tbd"},
        ),
    }


def _finance_payments() -> Tables:
    return {
        "invoices": (
            "Customer invoices",
            [
                col("invoice_id", "bigint"),
                col("customer_id", "bigint"),
                col("amount", "decimal(14,2)"),
                col("due_date", "date"),
                col("paid", "boolean"),
            ],
            [],
            {},
        ),
        "payments": (
            "Incoming payments",
            [
                col("payment_id", "bigint"),
                col("invoice_id", "bigint"),
                pii("iban", comment="payer bank account"),
                col("amount", "decimal(14,2)"),
                col("received_at", "timestamp"),
            ],
            [],
            {},
        ),
        "card_transactions": (
            "Card payments",
            [
                col("transaction_id", "string"),
                col("merchant"),
                pii("card_last4", comment="flag value is garbage on purpose", flag="partial"),
                col("amount", "decimal(12,2)"),
            ],
            [pii("cardholder_country", flag=" y ")],
            {},
        ),
        "refunds": (
            "Refunds issued",
            [
                col("refund_id", "bigint"),
                col("payment_id", "bigint"),
                col("amount", "decimal(12,2)"),
                col("reason"),
            ],
            [],
            {},
        ),
    }


def _legacy_exports() -> Tables:
    return {
        "nightly_dump": (
            "Old nightly export nobody owns",
            [col("row_id", "bigint"), col("payload"), col("exported_at", "timestamp")],
            [],
            {},
        ),
        "archive_2019": ("Archived 2019 data", [col("row_id", "bigint"), col("payload")], [], {}),
    }


DATABASES: dict[str, tuple[str, dict[str, str], Tables]] = {
    "sales_orders": (
        "Orders, line items and customers of the web shop",
        {"data_owner": "111111111111", "data_owner_name": "Sales"},
        _sales_orders(),
    ),
    "sales_crm": (
        "B2B CRM: accounts, contacts and pipeline",
        {"data_owner": "111111111111", "data_owner_name": "Sales", **PII},
        _sales_crm(),
    ),
    "marketing_campaigns": (
        "Campaigns, spend and attribution",
        {"data_owner": "222222222222", "data_owner_name": "Marketing", "pii_flag": "false"},
        _marketing_campaigns(),
    ),
    "marketing_web_analytics": (
        "Website clickstream and sessions",
        {"data_owner": "222222222222", "data_owner_name": "Marketing"},
        _marketing_web(),
    ),
    "hr_people": (
        "Employees, salaries and absences",
        {"data_owner": "333333333333", "data_owner_name": "People", "pii_flag": "yes"},
        _hr_people(),
    ),
    "hr_recruiting": (
        "Recruiting pipeline",
        {"data_owner": "333333333333", "data_owner_name": "People"},
        _hr_recruiting(),
    ),
    "finance_ledger": (
        "General ledger, budgets and FX rates",
        {"data_owner": "555555555555", "data_owner_name": "Finance"},
        _finance_ledger(),
    ),
    "finance_payments": (
        "Invoices, payments and card transactions",
        {"data_owner": "555555555555", "data_owner_name": "Finance"},
        _finance_payments(),
    ),
    "legacy_exports": ("Legacy exports with no owner set", {}, _legacy_exports()),
    "supply_chain": (
        "Inventory and shipments",
        {"data_owner": "111111111111", "data_owner_name": "Sales"},
        {
            "inventory": (
                "Stock per warehouse",
                [col("warehouse_id", "int"), col("sku"), col("on_hand", "int")],
                [col("snapshot_date", "date")],
                {},
            ),
            "shipments": (
                "Outbound shipments",
                [
                    col("shipment_id", "bigint"),
                    col("order_id", "bigint"),
                    col("carrier"),
                    col("shipped_at", "timestamp"),
                ],
                [],
                {},
            ),
            "warehouses": (
                "Warehouses",
                [col("warehouse_id", "int"), col("name"), col("city")],
                [],
                {},
            ),
            "suppliers": (
                "Suppliers",
                [col("supplier_id", "int"), col("name"), col("country")],
                [],
                {},
            ),
        },
    ),
}


def seed(glue: Any) -> int:
    """Create the demo databases and tables through a Glue client; returns the table count."""
    count = 0
    for name, (description, params, tables) in DATABASES.items():
        glue.create_database(
            DatabaseInput={"Name": name, "Description": description, "Parameters": params}
        )
        for table, (text, columns, partitions, table_params) in tables.items():
            glue.create_table(
                DatabaseName=name,
                TableInput={
                    "Name": table,
                    "Description": text,
                    "Parameters": table_params,
                    "PartitionKeys": partitions,
                    "TableType": "EXTERNAL_TABLE",
                    "StorageDescriptor": {
                        "Columns": columns,
                        "Location": f"s3://{name.replace('_', '-')}-lake/{table}/",
                    },
                },
            )
            count += 1
    return count


# Notifications: every producer but Finance has the reference design's topic, so the demo
# also shows what "owner not notified" looks like.
PRODUCERS_WITH_TOPIC = ("111111111111", "222222222222", "333333333333")
DECISION_TOPIC = f"arn:aws:sns:us-east-1:{CENTRAL_ACCOUNT}:mesh-decisions"
ADMIN_TOPIC = f"arn:aws:sns:us-east-1:{CENTRAL_ACCOUNT}:mesh-admin-reminders"
# The privacy office's topic in examples/policies/two-step-pii.yaml (groups.*.topic_arn).
PRIVACY_TOPIC = f"arn:aws:sns:us-east-1:{CENTRAL_ACCOUNT}:mesh-privacy-office"


def seed_topics(
    client_for: Any,
    *,
    role_name: str = "ProducerWorkflowRole",
    topic_name: str = "DataLakeSharingApproval",
) -> None:
    """Create the producers' approval topics (in their accounts) and the central topics."""
    sts = client_for("sts")
    for account in PRODUCERS_WITH_TOPIC:
        creds = sts.assume_role(
            RoleArn=f"arn:aws:iam::{account}:role/{role_name}", RoleSessionName="mesh-demo-seed"
        )["Credentials"]
        sns = client_for(
            "sns",
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
        )
        sns.create_topic(Name=topic_name)
    central = client_for("sns")
    for arn in (DECISION_TOPIC, ADMIN_TOPIC, PRIVACY_TOPIC):
        central.create_topic(Name=arn.rsplit(":", 1)[1])
