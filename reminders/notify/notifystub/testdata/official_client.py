"""Drive the Notify stub with GOV.UK Notify's official Python client, unchanged.

Run by oracle_test.go with NOTIFY_BASE_URL, NOTIFY_API_KEY, TEMPLATE_ID, BAD_API_KEY and
GO_REFERENCE in the environment. It sends text messages, reads each back by id and by the
uri the send returned, walks every notification with the client's own iterators (which
follow links.next), and records the errors the client raises. It prints one JSON object;
the Go test compares it with what the stub recorded, so nothing here is taken on trust.
"""

import json
import os
import sys

import notifications_python_client
from notifications_python_client.errors import HTTPError
from notifications_python_client.notifications import NotificationsAPIClient

base_url = os.environ["NOTIFY_BASE_URL"]
client = NotificationsAPIClient(os.environ["NOTIFY_API_KEY"], base_url=base_url)
template = os.environ["TEMPLATE_ID"]

# 07700900002 and 07700900003 end permanent-failure and temporary-failure under a test key.
phones = ["07700900001", "+447700900002", "07700 900003", "07700900004"]
sent = []
for i in range(13):
    reference = f"py-{i}" if i % 4 else None  # some without a reference
    resp = client.send_sms_notification(
        phone_number=phones[i % len(phones)],
        template_id=template,
        personalisation={"appointment_date": "Monday 6 May", "appointment_time": f"09:{i:02d}"},
        reference=reference,
    )
    by_id = client.get_notification_by_id(resp["id"])
    by_uri = client.get(resp["uri"])  # an absolute URL: urljoin keeps it as it is
    sent.append({"response": resp, "by_id": by_id, "by_uri": by_uri})


def ids(iterator):
    return [n["id"] for n in iterator]


walks = {
    "all": ids(client.get_all_notifications_iterator()),
    "sms": ids(client.get_all_notifications_iterator(template_type="sms")),
    "failed": ids(client.get_all_notifications_iterator(status="failed")),
    "delivered": ids(client.get_all_notifications_iterator(status="delivered")),
    "reference py-5": ids(client.get_all_notifications_iterator(reference="py-5")),
    "go reference": ids(client.get_all_notifications_iterator(reference=os.environ["GO_REFERENCE"])),
    "older than the 7th sent": ids(client.get_all_notifications_iterator(older_than=sent[6]["response"]["id"])),
    "email": ids(client.get_all_notifications_iterator(template_type="email")),
}
first_page = client.get_all_notifications()


def error_of(call):
    try:
        call()
    except HTTPError as e:
        return {"status_code": e.status_code, "message": e.message}
    return None


errors = {
    "unknown id": error_of(lambda: client.get_notification_by_id("0f0f0f0f-0f0f-4f0f-8f0f-0f0f0f0f0f0f")),
    "bad id": error_of(lambda: client.get_notification_by_id("not-a-uuid")),
    "bad status": error_of(lambda: client.get_all_notifications(status="elephant")),
    "wrong key": error_of(lambda: NotificationsAPIClient(os.environ["BAD_API_KEY"], base_url=base_url).get_all_notifications()),
    "landline": error_of(lambda: client.send_sms_notification("01632 960001", template)),
    "missing personalisation": error_of(lambda: client.send_sms_notification("07700900001", template)),
}

json.dump(
    {
        "client_version": notifications_python_client.__version__,
        "sent": sent,
        "walks": walks,
        "first_page_links": first_page["links"],
        "errors": errors,
    },
    sys.stdout,
)
