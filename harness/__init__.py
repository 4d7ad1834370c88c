"""The local harness: real local services (Tansu, the Google emulators, SMTP, webhooks, the function),
fault scenarios on them, the demo and the dashboard's sample data. It may import anything; nothing in
the product imports it."""
