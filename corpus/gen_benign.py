#!/usr/bin/env python3
"""Generates benign.jsonl: realistic, varied, innocent HTTP requests in the CRS corpus schema
(id, method, uri, headers, body), used by `cargo xtask eval` to measure the validator's false
positives. Deterministic (fixed seed): re-run after editing and commit both files.

    python3 corpus/gen_benign.py > corpus/benign.jsonl
"""
import base64
import json
import random
import urllib.parse

R = random.Random(20261124)
N = 2400

UAS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "okhttp/4.12.0",
    "python-requests/2.32.3",
    "curl/8.5.0",
    "Go-http-client/2.0",
    "axios/1.7.7",
    "PostmanRuntime/7.42.0",
    "MyShopApp/3.4.1 (iOS 18.1; iPhone15,2)",
]
ACCEPTS = ["text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "application/json", "*/*",
           "application/json, text/plain, */*"]
LANGS = ["en-US,en;q=0.9", "de-DE,de;q=0.9,en;q=0.8", "fr-FR,fr;q=0.9", "ja,en;q=0.8", "zh-CN,zh;q=0.9", "es-ES,es;q=0.9"]
FIRST = ["Alice", "Bob", "Chloé", "Dmitri", "Émile", "Fatima", "Göran", "Hiroshi", "Inés", "José", "Kwame", "Léa",
         "Mohammed", "Nguyễn", "Olga", "Priya", "Quentin", "Rosa", "Siobhán", "Tomás", "Ursula", "Wei", "Yusuf", "Zoë",
         "Patrick", "Connor", "Seán", "D'Angelo", "Mary-Jane", "Jean-Luc"]
LAST = ["O'Brien", "Smith", "Müller", "García", "Kowalski", "Nakamura", "Ivanova", "Dubois", "Rossi", "Andersson",
        "Okafor", "Chen", "Patel", "van der Berg", "MacDonald", "D'Souza", "Ó Súilleabháin", "Al-Farsi", "Nuñez"]
DOMAINS = ["example.com", "mail.example.org", "gmail.com", "outlook.com", "company.co.uk", "uni-heidelberg.de", "yahoo.fr"]
CITIES = ["São Paulo", "München", "Zürich", "Kraków", "Reykjavík", "Montréal", "Tōkyō", "New York, NY", "St. John's", "Île-de-France"]
PRODUCTS = ["USB-C cable (2 m)", "Men's running shoes - size 10½", "Coffee beans 1kg \"Ethiopia Yirgacheffe\"",
            "4K monitor 27\" IPS", "Kids' T-shirt (age 5-6)", "Rock 'n' Roll vinyl box set", "C++ Primer, 5th ed.",
            "O'Reilly: Learning SQL", "Dr. Martens 1460 boots", "AT&T prepaid SIM", "Ben & Jerry's ice cream",
            "Self-help book: 'Select your future'", "Union Jack flag 90x150cm", "Table tennis set & net", "Drop-leaf table"]
PROSE = [
    "Hi, I ordered the wrong size; could you please exchange it? Thanks!",
    "Great product. Would buy again :) 5/5",
    "The delivery was late (3 days) but support was helpful.",
    "Please select the items from your cart and update the order before Friday.",
    "I'd like to drop by the store and pick up my order where it says 'ready'.",
    "Our union members will meet at 5pm; bring your ID and a pen.",
    "Can you delete my old address from my account? I moved to a new place.",
    "To insert a new line, press Shift+Enter. To update, click 'Save'.",
    "Order #12345 — where is it? It's been 2 weeks & nothing.",
    "He said: \"this is the best coffee I've ever had\" -- and I agree.",
    "The price is $19.99 (was $24.99), i.e. 20% off; a bargain!",
    "Meeting notes: 1) budget, 2) timeline, 3) Q&A. Action items below.",
    "Is it safe to run the script? I'm not sure what it does...",
    "We <3 this app. Best. App. Ever.",
    "Temperature range: -5°C to +30°C; humidity < 80%.",
    "Use the \"or\" operator if either condition is true, and \"and\" if both are.",
    "1 + 1 = 2 and 2 * 3 = 6, basic arithmetic for my kid's homework.",
    "The select committee's report from 2019 is available online.",
    "I'm looking for a table for 4 people where we can sit outside.",
    "Could you drop the price a bit? I'll take two.",
    "Where can I find the user guide? The link on page 3 is broken.",
    "Fix: the 'Sign in' button does nothing on Firefox 133 (Linux).",
    "My password reset email never arrived; checked spam as well.",
    "Please update me when it's back in stock. Thx!",
    "Versand nach Österreich möglich? Vielen Dank im Voraus!",
    "Très bon produit, livraison rapide. Je recommande à 100 % !",
    "非常好的产品，物流很快，下次还会再买。",
    "商品の到着が遅れています。確認をお願いします。",
    "Отличный товар, всё пришло вовремя. Спасибо!",
    "المنتج ممتاز والتوصيل سريع، شكراً لكم",
    "उत्पाद बहुत अच्छा है, धन्यवाद!",
    "¿Tienen envío a Canarias? ¡Gracias!",
    "Great job team 🎉🚀 — shipping on time for once 😅",
    "Note to self: don't forget to call mum at 7; also buy milk & eggs.",
    "Results: 10/10 passed; runtime 3.2s; memory 120MB.",
    "See section 4.2 (\"Data retention\") of the privacy policy.",
    "Can I pay with PayPal or do I need a credit card?",
    "Line one\nLine two\nLine three with a tab\tin it",
    "Our CEO's memo: 'Select the best, drop the rest.'",
    "Tip: wrap code in backticks like `npm install` in the chat.",
    "I work at Procter & Gamble; please invoice to the address below.",
    "The film 'Union Station' (1950) is on at 8; tickets £7.50.",
    "How do I ignore files in git? I added them to the ignore list but they still show up.",
    "Can you act as a reference for my job application? Thanks in advance!",
    "The system prompted me twice for the password, is that normal?",
]
CODE = [
    "$(document).ready(function() { $('#menu').toggle(); });",
    "$(\".btn\").on(\"click\", () => console.log('clicked'));",
    "const total = items.reduce((sum, i) => sum + i.price, 0);",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "for (let i = 0; i < n; i++) { sum += arr[i]; }",
    "fn main() { println!(\"Hello, world!\"); }",
    ".btn-primary { color: #fff; background: #0d6efd; }",
    "if (x > 0 && y < 10) { return true; }",
    "import numpy as np\nx = np.arange(10)\nprint(x.mean())",
    "SELECT is my favourite SQL keyword; FROM is second.",
    "public static void main(String[] args) { System.out.println(\"hi\"); }",
    "git commit -m \"fix typo\" && git push origin main",
    "npm install --save-dev typescript@5.6",
    "<p>Hello <b>world</b></p>",
    "x = {'a': 1, 'b': [1, 2, 3]}",
    "let v: Vec<u32> = (1..=10).filter(|n| n % 2 == 0).collect();",
    "WHERE clause filters rows; ORDER BY sorts them.",
    "docker compose up -d --build",
    "The regex ^[a-z0-9._%+-]+@[a-z0-9.-]+\\.[a-z]{2,}$ validates emails.",
    "user@host:~$ echo hello",
]
SEARCH = ["c++ tutorial", "o'reilly books", "\"exact phrase\" search", "rock 'n' roll", "50% off shoes", "#summer2025",
          "ben & jerry's", "site:example.com pricing", "how to select from a list in python", "union station hours",
          "drop shipping", "insert emoji on mac", "what is 2+2", "-sponsored laptops", "best pizza near me",
          "ñandú", "café crème", "東京 ホテル", "北京烤鸭", "москва погода", "size 10½", "iphone 16 (pro) case",
          "a/b testing", "node.js vs deno", "c# async await", "f(x) = x^2 derivative", "1/2 cup in grams",
          "\"select\" html element", "sql join tutorial", "where to buy a table", "delete account", "update app",
          "script writing course", "javascript tutorial for beginners", "alert dialog design", "wget vs curl",
          "cat food", "ls 400 engine", "id card renewal", "ping pong table", "echo dot", "rm -rf meaning",
          "union jack", "drop table tennis", "or gate", "the & symbol", "100% cotton", "tom & jerry"]
PATHS = ["/", "/index.html", "/about", "/contact", "/blog/2024/05/how-we-ship-fast", "/products/usb-c-cable-2m",
         "/static/js/app.3f2a1b9c.js", "/static/css/main.8e1d.css", "/images/logo@2x.png", "/api/v1/users/{n}",
         "/api/v2/orders/{n}/items", "/account/settings", "/docs/getting-started", "/search", "/cart",
         "/.well-known/acme-challenge/Vq3xZ8kP0aB", "/.well-known/security.txt", "/favicon.ico", "/robots.txt",
         "/sitemap.xml", "/en-us/help/faq", "/category/men's-shoes", "/wiki/C%2B%2B", "/wiki/Caf%C3%A9",
         "/users/jean-luc.picard", "/files/report_2024-Q3.pdf", "/feed.rss", "/graphql", "/health", "/login"]


def rid():
    return R.randint(1, 999999)


def words(n):
    pool = " ".join(PROSE).replace("\n", " ").split()
    return " ".join(R.choice(pool) for _ in range(n))


def name():
    return f"{R.choice(FIRST)} {R.choice(LAST)}"


def email():
    f = R.choice(FIRST).lower().replace("'", "").replace(" ", "")
    f = f.encode("ascii", "ignore").decode() or "user"
    return f"{f}.{R.randint(1, 99)}+{R.choice(['news', 'shop', 'x'])}@{R.choice(DOMAINS)}" if R.random() < 0.3 \
        else f"{f}{R.randint(1, 999)}@{R.choice(DOMAINS)}"


def b64(n):
    return base64.b64encode(bytes(R.randrange(256) for _ in range(n))).decode()


def b64url(n):
    return base64.urlsafe_b64encode(bytes(R.randrange(256) for _ in range(n))).decode().rstrip("=")


def jwt():
    head = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').decode().rstrip("=")
    body = base64.urlsafe_b64encode(json.dumps({"sub": str(rid()), "name": name(), "iat": 1730000000 + rid()}).encode()).decode().rstrip("=")
    return f"{head}.{body}.{b64url(32)}"


def hexs(n):
    return "".join(R.choice("0123456789abcdef") for _ in range(n))


def uuid():
    h = hexs(32)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def headers(ct=None, browser=None):
    browser = R.random() < 0.6 if browser is None else browser
    h = {"Host": "shop.example.com", "User-Agent": R.choice(UAS[:5] if browser else UAS), "Accept": R.choice(ACCEPTS)}
    if browser:
        h["Accept-Language"] = R.choice(LANGS)
        h["Accept-Encoding"] = "gzip, deflate, br"
        cookies = [f"session={b64url(24)}", f"_ga=GA1.2.{R.randint(10**8, 10**9)}.{R.randint(10**9, 2*10**9)}"]
        if R.random() < 0.4:
            cookies.append("consent=" + urllib.parse.quote(json.dumps({"ads": False, "analytics": True, "v": 2})))
        if R.random() < 0.3:
            cookies.append(f"cart={uuid()}")
        if R.random() < 0.2:
            cookies.append("theme=dark; lang=" + R.choice(["en", "de", "fr", "ja"]))
        h["Cookie"] = "; ".join(cookies)
        if R.random() < 0.7:
            h["Referer"] = f"https://shop.example.com{R.choice(PATHS).replace('{n}', str(rid()))}"
    else:
        if R.random() < 0.5:
            h["Authorization"] = f"Bearer {jwt()}"
        if R.random() < 0.3:
            h["X-Request-ID"] = uuid()
        if R.random() < 0.2:
            h["X-Forwarded-For"] = f"203.0.113.{R.randint(1, 254)}, 10.0.{R.randint(0, 255)}.{R.randint(1, 254)}"
    if ct:
        h["Content-Type"] = ct
    return h


def q(params):
    return urllib.parse.urlencode(params, quote_via=urllib.parse.quote_plus)


def gen_browse():
    path = R.choice(PATHS).replace("{n}", str(rid()))
    params = {}
    if R.random() < 0.5:
        params = R.choice([
            {"page": R.randint(1, 40), "sort": R.choice(["price", "-price", "newest", "rating"])},
            {"utm_source": R.choice(["newsletter", "google", "facebook"]), "utm_medium": "email", "utm_campaign": "black_friday-2025"},
            {"ref": b64url(12)}, {"lang": R.choice(["en", "de", "fr-CA", "zh-Hans"])},
            {"next": R.choice(["/account", "/cart?step=2", "https://shop.example.com/checkout"])},
            {"redirect_uri": "https://app.example.com/oauth/callback", "state": b64url(16), "code": b64url(24)},
            {"ids": ",".join(str(rid()) for _ in range(R.randint(2, 8)))},
            {"filter[color]": R.choice(["red", "navy blue", "off-white"]), "filter[size]": R.choice(["S", "M", "XL", "10½"])},
            {"from": "2025-01-01", "to": "2025-12-31", "tz": "Europe/Berlin"},
            {"callback": "jQuery3710" + str(R.randint(10**15, 10**16)), "_": str(1730000000000 + rid())},
        ])
    uri = path + ("?" + q(params) if params else "")
    return "GET", uri, headers(browser=True), ""


def gen_search():
    term = R.choice(SEARCH)
    if R.random() < 0.3:
        term += " " + R.choice(["2025", "review", "price", "near me", "vs", "(new)", "– best"])
    params = {"q": term}
    if R.random() < 0.4:
        params["page"] = R.randint(1, 9)
    if R.random() < 0.3:
        params["category"] = R.choice(["books", "electronics", "home & garden", "men's"])
    return "GET", "/search?" + q(params), headers(browser=True), ""


def gen_json_api():
    kind = R.randrange(8)
    if kind == 0:
        body = {"user": {"name": name(), "email": email(), "phone": f"+49 {R.randint(100, 999)} {R.randint(1000000, 9999999)}",
                         "address": {"street": f"{R.randint(1, 200)} {R.choice(['Main St.', 'Rue de la Paix', 'Hauptstraße'])}",
                                     "city": R.choice(CITIES), "zip": str(R.randint(10000, 99999))}},
                "newsletter": R.random() < 0.5, "bio": R.choice(PROSE)}
    elif kind == 1:
        body = {"order_id": uuid(), "items": [{"sku": f"SKU-{R.randint(1000, 9999)}", "name": R.choice(PRODUCTS),
                                                "qty": R.randint(1, 5), "price": round(R.uniform(1, 500), 2)} for _ in range(R.randint(1, 5))],
                "coupon": R.choice(["", "WELCOME10", "BF-2025", "FREESHIP"]), "note": R.choice(PROSE)}
    elif kind == 2:
        body = {"rating": R.randint(1, 5), "title": words(R.randint(2, 6)), "review": " ".join(R.choice(PROSE) for _ in range(R.randint(1, 4)))}
    elif kind == 3:
        body = {"query": "query GetUser($id: ID!) { user(id: $id) { id name orders(first: 10) { edges { node { id total } } } } }",
                "variables": {"id": str(rid())}, "operationName": "GetUser"}
    elif kind == 4:
        body = {"avatar": "data:image/png;base64," + b64(R.randint(200, 1500)), "filename": R.choice(["me.png", "avatar (1).png", "photo_2024.jpg"])}
    elif kind == 5:
        body = {"event": R.choice(["page_view", "add_to_cart", "purchase"]), "ts": 1730000000 + rid(), "session": uuid(),
                "props": {"path": R.choice(PATHS).replace("{n}", str(rid())), "referrer": "https://www.google.com/", "screen": "1920x1080",
                          "ua": R.choice(UAS)}}
    elif kind == 6:
        body = {"messages": [{"role": "user", "content": R.choice(PROSE + CODE)}], "model": "support-bot", "temperature": 0.2}
    else:
        body = {"token": jwt(), "refresh_token": b64url(48), "device": {"id": hexs(40), "os": R.choice(["iOS 18.1", "Android 14"])}}
    method = R.choice(["POST", "POST", "PUT", "PATCH"])
    path = R.choice(["/api/v1/users", "/api/v1/orders", "/api/v1/reviews", "/graphql", "/api/v1/profile/avatar",
                     "/api/events", "/api/v1/chat", "/api/v1/auth/refresh"])
    return method, path, headers("application/json", browser=False), json.dumps(body, ensure_ascii=R.random() < 0.5)


def gen_form():
    kind = R.randrange(6)
    if kind == 0:
        pw = "".join(R.choice("abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789!@#$%^&*()-_=+;:,.?") for _ in range(R.randint(10, 20)))
        params = {"username": email(), "password": pw, "remember": "on", "csrf_token": b64url(32)}
        path = "/login"
    elif kind == 1:
        params = {"name": name(), "email": email(), "subject": words(R.randint(2, 5)), "message": "\r\n".join(R.choice(PROSE) for _ in range(R.randint(1, 3)))}
        path = "/contact"
    elif kind == 2:
        params = {"first_name": R.choice(FIRST), "last_name": R.choice(LAST), "city": R.choice(CITIES), "country": R.choice(["DE", "FR", "IE", "JP", "BR"]),
                  "company": R.choice(["AT&T", "Procter & Gamble", "Müller GmbH", "O'Neill's Pub", "Smith & Sons Ltd."]), "agree": "1"}
        path = "/register"
    elif kind == 3:
        params = {"comment": R.choice(PROSE + CODE), "post_id": str(rid()), "parent": ""}
        path = "/blog/comments"
    elif kind == 4:
        params = {"email": email(), "lists[]": R.choice(["weekly", "offers"])}
        path = "/newsletter/subscribe"
    else:
        params = {"q": R.choice(SEARCH), "min_price": str(R.randint(0, 50)), "max_price": str(R.randint(60, 500)), "in_stock": "true"}
        path = "/search/advanced"
    return "POST", path, headers("application/x-www-form-urlencoded", browser=True), q(params)


def gen_multipart():
    boundary = "----WebKitFormBoundary" + b64url(12).replace("-", "A").replace("_", "B")
    fname = R.choice(["holiday photo.jpg", "CV_Jean-Luc_2025.pdf", "invoice #123.pdf", "résumé.docx", "data.csv"])
    content = R.choice([b64(300), "id,name,price\n1,Widget,9.99\n2,\"Gadget, large\",19.99\n", "%PDF-1.7 binary-ish content ; -- /* */ ../"])
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\n{words(R.randint(2, 6))}\r\n",
             f"--{boundary}\r\nContent-Disposition: form-data; name=\"description\"\r\n\r\n{R.choice(PROSE)}\r\n",
             f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{fname}\"\r\nContent-Type: application/octet-stream\r\n\r\n{content}\r\n",
             f"--{boundary}--\r\n"]
    return "POST", "/upload", headers(f"multipart/form-data; boundary={boundary}", browser=True), "".join(parts)


def gen_xml():
    body = (f'<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">'
            f'<soap:Body><GetPrice xmlns="https://example.com/prices"><Item>{R.choice(PRODUCTS).replace("&", "&amp;").replace(chr(34), "&quot;")}</Item>'
            f'<Qty>{R.randint(1, 9)}</Qty></GetPrice></soap:Body></soap:Envelope>')
    return "POST", "/soap/prices", headers("text/xml; charset=utf-8", browser=False), body


def gen_long_tokens():
    kind = R.randrange(4)
    if kind == 0:
        uri = f"/api/v1/files/{hexs(64)}?sig={b64url(32)}&expires={1730000000 + rid()}"
    elif kind == 1:
        uri = f"/verify-email?token={jwt()}"
    elif kind == 2:
        uri = f"/download/{uuid()}/{R.choice(['report.pdf', 'photo.JPG', 'archive.tar.gz'])}?X-Amz-Signature={hexs(64)}&X-Amz-Credential=AKIA{hexs(16).upper()}%2F20251124%2Feu-west-1%2Fs3%2Faws4_request"
    else:
        uri = f"/track?d={urllib.parse.quote(b64(R.randint(60, 400)))}"
    return "GET", uri, headers(browser=R.random() < 0.5), ""


GENS = [(gen_browse, 20), (gen_search, 15), (gen_json_api, 25), (gen_form, 20), (gen_multipart, 5), (gen_xml, 5), (gen_long_tokens, 10)]


def main():
    total = sum(w for _, w in GENS)
    seen = set()
    n = 0
    while n < N:
        x = R.uniform(0, total)
        for gen, w in GENS:
            x -= w
            if x <= 0:
                break
        method, uri, hdrs, body = gen()
        key = (method, uri, body)
        if key in seen:
            continue
        seen.add(key)
        n += 1
        if body:
            hdrs["Content-Length"] = str(len(body.encode()))
        print(json.dumps({"id": f"benign-{n:04d}-{gen.__name__[4:]}", "method": method, "uri": uri, "headers": hdrs, "body": body}, ensure_ascii=False))


if __name__ == "__main__":
    main()
