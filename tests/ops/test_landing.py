import re

import pytest


@pytest.mark.django_db
def test_landing_page_says_what_this_is_and_links_to_docs_admin_and_health(client):
    page = client.get("/")
    assert page.status_code == 200
    assert page["Content-Type"].startswith("text/html")
    html = page.content.decode()
    assert "artifactcourier" in html
    links = set(re.findall(r'href="([^"]+)"', html))
    assert {"/api/docs/", "/admin/", "/healthz"} <= links
    for link in links:  # every link leads somewhere (the admin redirects to its login)
        assert client.get(link).status_code in (200, 302), link


def test_landing_page_loads_nothing_from_elsewhere(client):
    html = client.get("/").content.decode()
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<script" not in html
    assert "@import" not in html


def test_landing_page_is_read_only(client):
    assert client.post("/").status_code == 405
