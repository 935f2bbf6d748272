"""POST /api/v1/media/: a notification's header document uploaded to Meta,
then sent by its media id with its file name."""

import pytest
import requests
from django.core.files.uploadedfile import SimpleUploadedFile

from conversations.models import Message
from tests.fixtures.business import ANNA, NOTIFY_URL, api_client_for, consent
from tests.fixtures.outbound import sends, wait_for_status

MEDIA_URL = "/api/v1/media/"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n"


def upload(api, data=PDF, name="boarding-pass.pdf", content_type="application/pdf"):
    return api.post(
        MEDIA_URL,
        {"file": SimpleUploadedFile(name, data, content_type=content_type)},
        format="multipart",
    )


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_an_uploaded_pdf_is_sent_as_the_document_header_by_id_and_file_name(
    shop_api, templates, sandbox_number, delivery_worker, graph_sandbox
):
    response = upload(shop_api)
    assert response.status_code == 201, response.content
    media = response.json()
    assert media["type"] == "document"
    assert (media["mime_type"], media["filename"], media["size"]) == (
        "application/pdf",
        "boarding-pass.pdf",
        len(PDF),
    )
    assert media["number"] == sandbox_number.pk
    stored = requests.get(
        f"{graph_sandbox.base_url}/_sandbox/media/{media['id']}", timeout=10
    )
    assert stored.content == PDF

    consent(shop_api, ANNA)
    response = shop_api.post(
        NOTIFY_URL,
        {
            "to": ANNA,
            "purpose": "utility",
            "template": {"name": "boarding_pass", "language": "en"},
            "parameters": {
                "header": {
                    "document": {"id": media["id"], "filename": media["filename"]}
                },
                "body": ["Anna", "LH 2046"],
            },
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    wait_for_status(Message.objects.get(pk=response.json()["message"]), "sent", "read")
    [send] = [s for s in sends(graph_sandbox) if s["body"].get("type") == "template"]
    assert send["body"]["template"]["components"][0] == {
        "type": "header",
        "parameters": [
            {
                "type": "document",
                "document": {"id": media["id"], "filename": "boarding-pass.pdf"},
            }
        ],
    }


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_uploads_meta_would_refuse_never_leave(
    shop_api, templates, sandbox_number, graph_sandbox, agent
):
    response = upload(shop_api, b"hello", "notes.txt", "text/plain")
    assert response.status_code == 422
    assert response.json()["code"] == "media_refused"
    response = upload(shop_api, b"<html>not a pdf</html>")
    assert response.status_code == 422
    assert response.json()["code"] == "media_refused"
    large = b"\xff\xd8\xff" + b"0" * (5 * 1024 * 1024)
    response = upload(shop_api, large, "photo.jpg", "image/jpeg")
    assert response.status_code == 422, "Meta's 5 MB image limit"
    response = shop_api.post(MEDIA_URL, {}, format="multipart")
    assert response.status_code == 400
    assert upload(api_client_for(agent)).status_code == 403
    uploads = [
        r
        for r in graph_sandbox.control._call(
            "GET", "requests", params={"path": "/media", "limit": 100}
        )["requests"]
        if r["method"] == "POST"
    ]
    assert uploads == []


@pytest.mark.django_db
def test_the_schema_documents_the_media_upload(client):
    document = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    post = document["paths"]["/api/v1/media/"]["post"]
    assert "multipart/form-data" in post["requestBody"]["content"]
    assert {"201", "400", "403", "422"} <= set(post["responses"])
