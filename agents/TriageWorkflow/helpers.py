"""Billing data for the TriageWorkflow example (made up, offline)."""

REFUND_LIMIT_EUR = 100.0

INVOICES = {
    "INV-1001": {"customer": "ACME", "amount_eur": 49.0, "status": "paid"},
    "INV-1002": {"customer": "Globex", "amount_eur": 420.0, "status": "open"},
}


def describe_invoice(invoice_id: str) -> str:
    invoice = INVOICES.get(invoice_id.strip().upper())
    if invoice is None:
        return f"No invoice {invoice_id}."
    return f"{invoice_id}: {invoice['amount_eur']:.2f} EUR for {invoice['customer']}, {invoice['status']}"
