"""docs/AUDIT.md lists every action code the platform writes, and the README every audit setting."""

from pathlib import Path

from exchange.audit.actions import ACTIONS

ROOT = Path(__file__).resolve().parents[3]


def test_every_action_code_is_documented():
    text = (ROOT / "docs" / "AUDIT.md").read_text()
    assert [code for code in ACTIONS if f"| `{code}` |" not in text] == []


def test_every_audit_setting_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for name in ("AUDIT_SIGNING_KEY", "AUDIT_CHAIN_INTERVAL_S", "AUDIT_CHAIN_BATCH_SIZE", "RETENTION_AUDIT_DAYS",
                 "RETENTION_ORDERS_DAYS", "RETENTION_TRADES_DAYS", "RETENTION_INTERVAL_S"):
        assert f"`{name}`" in readme, name
