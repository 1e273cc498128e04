#!/usr/bin/env python3
"""The operator console in a real browser (headless chromium through Selenium), against
a running gateway: the token gate, the live connection count of real MQTT clients, the
pile lookup and its peer address, kick from the page, events by pile, the Chinese
labels. Screenshots of each view go to ARTIFACTS. Prints "console: all checks passed".

    console_browser.py ADMIN_URL MQTT_PORT TOKEN ARTIFACTS
"""
import os
import sys
import threading
import time

import paho.mqtt.client as mqtt
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

admin, port, token, artifacts = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
os.makedirs(artifacts, exist_ok=True)

piles = {}
gone = {}


def connect(n):
    cid = "PILE%04d" % n
    ready = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv311)
    c.on_connect = lambda cl, u, f, rc, p: ready.set()
    gone[cid] = threading.Event()
    c.on_disconnect = lambda cl, u, f, rc, p: gone[cid].set()
    c.reconnect_delay_set(min_delay=60, max_delay=60)   # a kicked pile stays away for the test
    c.connect("127.0.0.1", port, keepalive=60)
    c.loop_start()
    assert ready.wait(10), cid
    piles[cid] = c


options = webdriver.ChromeOptions()
for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
    options.add_argument(a)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
wait = WebDriverWait(driver, 15)


def testid(name):
    return driver.find_element(By.CSS_SELECTOR, '[data-testid="%s"]' % name)


def text(selector):
    """The element's text, also while its tab is hidden (WebElement.text is the visible text only)."""
    return driver.find_element(By.CSS_SELECTOR, selector).get_attribute("textContent").strip()


def shot(name):
    driver.save_screenshot(os.path.join(artifacts, name + ".png"))


try:
    for n in range(1, 51):
        connect(n)
    driver.get(admin + "/")
    # A wrong token is refused and the console stays closed.
    testid("token-input").send_keys("not-the-token")
    testid("token-form").submit()
    wait.until(lambda d: testid("token-error").text == "wrong token")
    assert not driver.find_element(By.ID, "app").is_displayed()
    shot("token")
    assert testid("token-input").get_attribute("value") == "", "the refused token is not left in the field"
    testid("token-input").send_keys(token)
    testid("token-form").submit()
    wait.until(lambda d: text('[data-metric="connections"]') == "50")
    assert token not in driver.current_url
    time.sleep(2)   # a few samples on the charts
    shot("overview")
    for n in range(51, 61):
        connect(n)
    wait.until(lambda d: text('[data-metric="connections"]') == "60")

    # Lookup: the pile's own peer address, as its socket sees it.
    local = "%s:%d" % piles["PILE0007"].socket().getsockname()[:2]
    testid("tab-piles").click()
    testid("device-lookup").send_keys("PILE0007")
    testid("lookup-button").click()
    wait.until(lambda d: testid("device-result").is_displayed())
    assert text('[data-field="peer"]') == local, (text('[data-field="peer"]'), local)
    assert text('[data-field="client_id"]') == "PILE0007"
    shot("piles")
    testid("kick").click()
    assert gone["PILE0007"].wait(10), "kicked from the page"
    wait.until(lambda d: testid("action-result").text == "kicked")
    wait.until(lambda d: text('[data-metric="connections"]') == "59")

    # Events of that pile: its disconnect, with the reason.
    testid("tab-events").click()
    testid("events-filter").send_keys("PILE0007")
    wait.until(lambda d: any("reason=kicked" in r.text for r in
                             d.find_elements(By.CSS_SELECTOR, '[data-testid="events-table"] tr[data-type="disconnect"]')))
    rows = driver.find_elements(By.CSS_SELECTOR, '[data-testid="events-table"] tbody tr')
    assert all("PILE0007" in r.text for r in rows), [r.text for r in rows]
    shot("events")

    # The fleet: this node, its connections, ready.
    testid("tab-fleet").click()
    wait.until(lambda d: any(r.get_attribute("data-node") == "test-node" and "59" in r.text and "ready" in r.text
                             for r in d.find_elements(By.CSS_SELECTOR, '[data-testid="fleet-table"] tbody tr')))
    shot("fleet")

    # Chinese labels.
    testid("lang-toggle").click()
    testid("tab-overview").click()
    wait.until(lambda d: testid("tab-overview").text == "总览")
    assert text('[data-metric="connections"]') == "59"
    shot("overview-zh")
    print("console: all checks passed")
finally:
    driver.quit()
    for c in piles.values():
        c.loop_stop()
        c.disconnect()
