/* The trading page, in plain JavaScript (no build step, no libraries).
 *
 * Data flow: everything is loaded by REST at start (docs/API.md). Live
 * updates come over the WebSocket at /ws/ (protocol in docs/API.md, "Live
 * updates"): order book snapshot + contiguous deltas (a gap sends "resync"),
 * trades, ticker and the user's orders and balances. While the WebSocket is
 * not connected the page polls the public REST endpoints every few seconds,
 * and after each of the user's own actions it refreshes their orders and
 * balances by REST, so it works (more slowly) without live updates.
 *
 * Amounts stay the API's decimal strings: they are shown as received and
 * sent as typed. Numbers (floats) are used only to sort levels and to place
 * pixels on the chart, never for a value sent to the server.
 */
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("trading-config").textContent);
  var API = config.api;
  var POLL_PUBLIC_MS = 3000;
  var POLL_PRIVATE_MS = 5000;
  var POLL_KLINES_MS = 15000;
  var BOOK_LEVELS = 15;
  var TRADES_SHOWN = 40;
  var OPEN_STATUSES = { PENDING: 1, UNTRIGGERED: 1, NEW: 1, PARTIALLY_FILLED: 1 };

  var state = {
    symbol: config.symbol,
    user: config.user,
    book: { bids: new Map(), asks: new Map(), sequence: null },
    trades: [],
    klines: [],
    interval: "1m",
    orders: new Map(), // id -> order (the user's, every market)
    balances: new Map(), // asset -> row
    ws: null,
    wsLive: false,
    wsRetryMs: 1000,
    wsTimer: null,
    timers: [],
  };

  // --- small helpers ------------------------------------------------------

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") node.textContent = attrs[key];
      else if (key === "className") node.className = attrs[key];
      else node.setAttribute(key, attrs[key]);
    });
    (children || []).forEach(function (child) { node.appendChild(child); });
    return node;
  }

  function td(text, className) { return el("td", { text: text == null ? "-" : String(text), className: className || "" }); }

  function market() {
    return config.markets.find(function (m) { return m.symbol === state.symbol; }) || null;
  }

  function decimalsOf(step) {
    var text = String(step || "1");
    var dot = text.indexOf(".");
    return dot < 0 ? 0 : text.length - dot - 1;
  }

  function formatTime(iso) {
    var date = new Date(iso);
    return isNaN(date) ? "" : date.toLocaleTimeString([], { hour12: false });
  }

  function formatDateTime(iso) {
    var date = new Date(iso);
    return isNaN(date) ? "" : date.toLocaleString([], { hour12: false });
  }

  function getCookie(name) {
    var match = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return match ? decodeURIComponent(match[1]) : null;
  }

  function ApiError(status, body) {
    this.status = status;
    this.code = (body && body.code) || "HTTP_" + status;
    this.message = (body && body.message) || "The request failed (HTTP " + status + ").";
    this.field = (body && body.field) || null;
  }

  var csrfToken = null;

  async function ensureCsrf() {
    // The page sets the cookie; the endpoint is the fallback (and rotates with login).
    csrfToken = getCookie("csrftoken");
    if (!csrfToken) {
      var body = await request("GET", "/auth/csrf");
      csrfToken = body.csrf_token;
    }
    return csrfToken;
  }

  async function request(method, path, body) {
    var headers = { Accept: "application/json" };
    var init = { method: method, headers: headers, credentials: "same-origin" };
    if (method !== "GET" && method !== "HEAD") {
      headers["X-CSRFToken"] = getCookie("csrftoken") || csrfToken || (await ensureCsrf());
    }
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    var response;
    try {
      response = await fetch(API + path, init);
    } catch (error) {
      throw new ApiError(0, { code: "NETWORK_ERROR", message: "The exchange cannot be reached; check your connection." });
    }
    var text = await response.text();
    var data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (error) { data = null; }
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  function quietly(promise) {
    return promise.catch(function (error) { if (window.console) console.warn(error.code || error, error.message || ""); });
  }

  // --- order book ------------------------------------------------------------

  function bookReplace(bids, asks, sequence) {
    state.book.bids = new Map(bids.map(function (level) { return [level[0], level[1]]; }));
    state.book.asks = new Map(asks.map(function (level) { return [level[0], level[1]]; }));
    state.book.sequence = sequence;
    renderBook();
  }

  function bookApply(levels, side) {
    levels.forEach(function (level) {
      if (Number(level[1]) === 0) side.delete(level[0]);
      else side.set(level[0], level[1]);
    });
  }

  function sortedLevels(side, descending) {
    var levels = Array.from(side.entries());
    levels.sort(function (a, b) { return descending ? Number(b[0]) - Number(a[0]) : Number(a[0]) - Number(b[0]); });
    return levels;
  }

  function myPrices(side) {
    var prices = new Set();
    state.orders.forEach(function (order) {
      if (order.market === state.symbol && order.side === side && OPEN_STATUSES[order.status] && order.price) {
        prices.add(Number(order.price));
      }
    });
    return prices;
  }

  function renderBookSide(tbody, levels, className, mine) {
    var maxQty = levels.reduce(function (max, level) { return Math.max(max, Number(level[1])); }, 0) || 1;
    tbody.replaceChildren.apply(tbody, levels.map(function (level) {
      var width = Math.round((Number(level[1]) / maxQty) * 100);
      var row = el("tr", { "data-price": level[0], className: mine.has(Number(level[0])) ? "mine" : "" }, [
        td(level[0], className), td(level[1]),
      ]);
      var tint = className === "bid" ? "rgba(47,158,68,.16)" : "rgba(224,49,49,.16)";
      row.style.backgroundImage = "linear-gradient(to left, " + tint + " " + width + "%, transparent " + width + "%)";
      return row;
    }));
  }

  function renderBook() {
    var bids = sortedLevels(state.book.bids, true).slice(0, BOOK_LEVELS);
    var asks = sortedLevels(state.book.asks, false).slice(0, BOOK_LEVELS).reverse();
    renderBookSide($("orderbook-bids"), bids, "bid", myPrices("BUY"));
    renderBookSide($("orderbook-asks"), asks, "ask", myPrices("SELL"));
    var spread = $("book-spread");
    if (bids.length && asks.length) {
      var places = decimalsOf((market() || {}).tick_size);
      var bestAsk = Number(asks[asks.length - 1][0]);
      var bestBid = Number(bids[0][0]);
      spread.textContent = "Spread " + (bestAsk - bestBid).toFixed(places);
    } else {
      spread.textContent = bids.length || asks.length ? "One-sided book" : "Empty book";
    }
    $("book-sequence").textContent = state.book.sequence != null ? "seq " + state.book.sequence : "";
  }

  function loadBook() {
    return request("GET", "/orderbook/" + state.symbol + "?depth=50").then(function (book) {
      if (book.symbol === state.symbol) bookReplace(book.bids, book.asks, book.sequence);
    });
  }

  // --- trades and ticker -------------------------------------------------------

  function renderTrades() {
    $("trades-body").replaceChildren.apply($("trades-body"), state.trades.slice(0, TRADES_SHOWN).map(function (trade) {
      return el("tr", {}, [
        td(trade.price, trade.taker_side === "BUY" ? "buy-text" : "sell-text"),
        td(trade.quantity),
        td(formatTime(trade.executed_at)),
      ]);
    }));
  }

  function loadTrades() {
    var symbol = state.symbol;
    return request("GET", "/trades?market=" + symbol + "&limit=" + TRADES_SHOWN).then(function (trades) {
      if (symbol !== state.symbol) return;
      state.trades = trades;
      renderTrades();
    });
  }

  function renderTicker(ticker) {
    $("ticker-last").textContent = ticker.last || "-";
    var change = ticker.change_percent != null ? ticker.change_percent + "%" : "-";
    $("ticker-change").textContent = change;
    $("ticker-change").className = ticker.change && Number(ticker.change) < 0 ? "sell-text" : "";
    $("ticker-high").textContent = ticker.high || "-";
    $("ticker-low").textContent = ticker.low || "-";
    $("ticker-volume").textContent = ticker.volume || "-";
    if (ticker.last) document.title = ticker.last + " " + state.symbol + " | " + document.title.split(" | ").pop();
  }

  function loadTicker() {
    var symbol = state.symbol;
    return request("GET", "/ticker/" + symbol).then(function (ticker) { if (symbol === state.symbol) renderTicker(ticker); });
  }

  // --- chart (candlesticks on a canvas) --------------------------------------

  var INTERVAL_MS = { "1m": 60e3, "5m": 300e3, "15m": 900e3, "1h": 3600e3, "4h": 14400e3, "1d": 86400e3 };

  function loadKlines() {
    var symbol = state.symbol;
    return request("GET", "/klines/" + symbol + "?interval=" + state.interval + "&limit=120").then(function (rows) {
      if (symbol !== state.symbol) return;
      state.klines = rows.map(function (k) {
        return { t: Date.parse(k.open_time), o: Number(k.open), h: Number(k.high), l: Number(k.low), c: Number(k.close), v: Number(k.volume) };
      });
      drawChart();
    });
  }

  function klinesAddTrade(trade) {
    // Live trades extend the last candle (or open a new one) between reloads.
    var price = Number(trade.price);
    var time = Number(trade.timestamp) || Date.parse(trade.executed_at) || Date.now();
    var step = INTERVAL_MS[state.interval];
    var open = Math.floor(time / step) * step;
    var last = state.klines[state.klines.length - 1];
    if (last && last.t === open) {
      last.h = Math.max(last.h, price); last.l = Math.min(last.l, price); last.c = price; last.v += Number(trade.quantity);
    } else if (!last || open > last.t) {
      state.klines.push({ t: open, o: price, h: price, l: price, c: price, v: Number(trade.quantity) });
      if (state.klines.length > 120) state.klines.shift();
    }
  }

  function drawChart() {
    var canvas = $("chart");
    var ratio = window.devicePixelRatio || 1;
    var width = canvas.clientWidth, height = canvas.clientHeight;
    if (!width || !height) return;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    var ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    var styles = getComputedStyle(document.body);
    var text = styles.color, line = styles.getPropertyValue("--line").trim() || "rgba(128,128,128,.3)";
    var buy = styles.getPropertyValue("--buy").trim() || "#2f9e44", sell = styles.getPropertyValue("--sell").trim() || "#e03131";
    ctx.font = "11px system-ui, sans-serif";
    var candles = state.klines;
    if (!candles.length) {
      ctx.fillStyle = text;
      ctx.textAlign = "center";
      ctx.fillText("No trades yet in " + state.symbol, width / 2, height / 2);
      return;
    }
    var axis = 64, volumeHeight = Math.min(50, height * 0.18), top = 8, bottom = height - volumeHeight - 18;
    var plotWidth = width - axis;
    var high = Math.max.apply(null, candles.map(function (c) { return c.h; }));
    var low = Math.min.apply(null, candles.map(function (c) { return c.l; }));
    if (high === low) { high += high * 0.001 || 1; low -= low * 0.001 || 1; }
    var pad = (high - low) * 0.05; high += pad; low -= pad;
    var y = function (price) { return top + (high - price) / (high - low) * (bottom - top); };
    var slot = plotWidth / Math.max(candles.length, 30);
    var body = Math.max(1, slot * 0.7);
    var places = decimalsOf((market() || {}).tick_size);
    // Grid and price labels.
    ctx.strokeStyle = line; ctx.fillStyle = text; ctx.textAlign = "left"; ctx.lineWidth = 1;
    for (var i = 0; i <= 4; i++) {
      var price = low + (high - low) * i / 4, gy = Math.round(y(price)) + 0.5;
      ctx.beginPath(); ctx.moveTo(0, gy); ctx.lineTo(plotWidth, gy); ctx.stroke();
      ctx.fillText(price.toFixed(places), plotWidth + 4, gy + 4);
    }
    var maxVolume = Math.max.apply(null, candles.map(function (c) { return c.v; })) || 1;
    var offset = plotWidth - candles.length * slot;
    candles.forEach(function (c, index) {
      var x = offset + index * slot + slot / 2;
      var colour = c.c >= c.o ? buy : sell;
      ctx.strokeStyle = colour; ctx.fillStyle = colour;
      ctx.beginPath(); ctx.moveTo(Math.round(x) + 0.5, y(c.h)); ctx.lineTo(Math.round(x) + 0.5, y(c.l)); ctx.stroke();
      var bodyTop = y(Math.max(c.o, c.c)), bodyHeight = Math.max(1, Math.abs(y(c.o) - y(c.c)));
      ctx.fillRect(x - body / 2, bodyTop, body, bodyHeight);
      var vh = (c.v / maxVolume) * volumeHeight;
      ctx.globalAlpha = 0.4;
      ctx.fillRect(x - body / 2, height - 14 - vh, body, vh);
      ctx.globalAlpha = 1;
    });
    // Last price marker.
    var last = candles[candles.length - 1].c, ly = Math.round(y(last)) + 0.5;
    ctx.setLineDash([3, 3]); ctx.strokeStyle = text;
    ctx.beginPath(); ctx.moveTo(0, ly); ctx.lineTo(plotWidth, ly); ctx.stroke(); ctx.setLineDash([]);
    ctx.fillStyle = getComputedStyle(document.body).getPropertyValue("--accent").trim() || "#f59f00";
    ctx.fillRect(plotWidth, ly - 8, axis, 16);
    ctx.fillStyle = "#000";
    ctx.fillText(last.toFixed(places), plotWidth + 4, ly + 4);
    // Time labels: first and last candle.
    ctx.fillStyle = text;
    ctx.fillText(new Date(candles[0].t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false }), Math.max(0, offset), height - 2);
    ctx.textAlign = "right";
    if (plotWidth - offset > 90) ctx.fillText(new Date(candles[candles.length - 1].t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false }), plotWidth, height - 2);
  }

  // --- the user's orders and balances ------------------------------------------

  function renderOrders() {
    var orders = Array.from(state.orders.values()).sort(function (a, b) { return b.id - a.id; });
    var open = orders.filter(function (o) { return OPEN_STATUSES[o.status]; });
    $("open-orders").replaceChildren.apply($("open-orders"), open.map(function (order) {
      var cancel = el("button", {
        type: "button", className: "btn small cancel", "data-order-id": String(order.id),
        "aria-label": "Cancel order " + order.id + " (" + order.side + " " + (order.quantity || order.quote_quantity) + " " + order.market + ")",
        text: order.cancel_requested ? "Canceling" : "Cancel",
      });
      if (order.cancel_requested) cancel.disabled = true;
      return el("tr", { "data-order-id": String(order.id), "data-status": order.status }, [
        td(order.market), td(order.side, order.side === "BUY" ? "buy-text" : "sell-text"), td(order.type),
        td(order.price || (order.stop_price ? "stop " + order.stop_price : "market")),
        td(order.quantity || order.quote_quantity), td(order.filled_quantity), td(order.status),
        el("td", {}, [cancel]),
      ]);
    }));
    $("order-history").replaceChildren.apply($("order-history"), orders.slice(0, 100).map(function (order) {
      return el("tr", { "data-order-id": String(order.id), "data-status": order.status }, [
        td(order.market), td(order.side, order.side === "BUY" ? "buy-text" : "sell-text"), td(order.type),
        td(order.price || "market"), td(order.quantity || order.quote_quantity), td(order.filled_quantity),
        td(order.average_price), td(order.status + (order.status_reason ? " (" + order.status_reason + ")" : "")),
        td(formatDateTime(order.created_at)),
      ]);
    }));
    renderBook(); // marks the levels holding the user's orders
  }

  function renderBalances() {
    var rows = Array.from(state.balances.values()).sort(function (a, b) { return a.asset < b.asset ? -1 : 1; });
    $("balances").replaceChildren.apply($("balances"), rows.map(function (row) {
      return el("tr", { "data-asset": row.asset }, [td(row.asset), td(row.available), td(row.held), td(row.total)]);
    }));
    updateHint();
  }

  function orderUpsert(order) {
    var known = state.orders.get(order.id);
    // A late REST answer must not undo a newer WebSocket update.
    if (known && known.updated_at && order.updated_at && known.updated_at > order.updated_at) return;
    state.orders.set(order.id, order);
  }

  function loadOrders() {
    if (!state.user) return Promise.resolve();
    return Promise.all([
      request("GET", "/orders?status=OPEN&limit=200"),
      request("GET", "/orders?limit=100"),
    ]).then(function (pages) {
      var fresh = new Map();
      pages[1].results.concat(pages[0].results).forEach(function (order) { fresh.set(order.id, order); });
      // Orders no longer open and beyond the history page drop out; the rest are replaced.
      state.orders = fresh;
      renderOrders();
    }).catch(function (error) {
      if (error.status === 401 || error.status === 403) return signedOut();
      throw error;
    });
  }

  function loadBalances() {
    if (!state.user) return Promise.resolve();
    return request("GET", "/balances").then(function (rows) {
      state.balances = new Map(rows.map(function (row) { return [row.asset, row]; }));
      renderBalances();
    });
  }

  function refreshMine() {
    // Right away, then once more when the matcher has sequenced what was just sent.
    quietly(Promise.all([loadOrders(), loadBalances()]));
    setTimeout(function () { quietly(Promise.all([loadOrders(), loadBalances()])); }, 700);
  }

  // --- order entry -----------------------------------------------------------------

  var FIELD_INPUTS = { price: "order-price", stop_price: "order-stop-price", quantity: "order-quantity", quote_quantity: "order-quantity" };

  function selectedSide() { return document.querySelector("input[name=side]:checked").value; }

  function updateEntry() {
    var type = $("order-type").value, side = selectedSide(), m = market() || {};
    $("price-field").hidden = type === "MARKET";
    $("stop-price-field").hidden = type !== "STOP_LOSS_LIMIT";
    var submit = $("order-submit");
    submit.textContent = (side === "BUY" ? "Buy " : "Sell ") + (m.base || "");
    submit.className = "btn " + (side === "BUY" ? "buy-btn" : "sell-btn");
    document.querySelectorAll(".base-unit").forEach(function (node) { node.textContent = m.base ? "(" + m.base + ")" : ""; });
    document.querySelectorAll(".quote-unit").forEach(function (node) { node.textContent = m.quote ? "(" + m.quote + ")" : ""; });
    updateHint();
  }

  function updateHint() {
    var m = market() || {};
    var side = selectedSide();
    var asset = side === "BUY" ? m.quote : m.base;
    var balance = asset && state.balances.get(asset);
    var parts = [];
    if (balance) parts.push("Available: " + balance.available + " " + asset);
    if (m.tick_size) parts.push("tick " + m.tick_size + ", step " + m.step_size + ", min notional " + m.min_notional);
    $("order-hint").textContent = parts.join(" · ");
  }

  function clearOrderErrors() {
    $("order-error").textContent = "";
    $("order-message").textContent = "";
    Object.values(FIELD_INPUTS).forEach(function (id) { $(id).removeAttribute("aria-invalid"); });
  }

  async function submitOrder(event) {
    event.preventDefault();
    clearOrderErrors();
    var type = $("order-type").value;
    var body = { market: state.symbol, side: selectedSide(), type: type, quantity: $("order-quantity").value.trim() };
    if (type !== "MARKET") body.price = $("order-price").value.trim();
    if (type === "STOP_LOSS_LIMIT") body.stop_price = $("order-stop-price").value.trim();
    // Empty fields are left out so the API names the missing one (REQUIRED...).
    Object.keys(body).forEach(function (key) { if (body[key] === "") delete body[key]; });
    var submit = $("order-submit");
    submit.disabled = true;
    try {
      var order = await request("POST", "/orders", body);
      orderUpsert(order);
      renderOrders();
      $("order-message").textContent = "Order " + order.id + " accepted (" + order.status + ").";
      refreshMine();
    } catch (error) {
      $("order-error").textContent = error.message + " (" + error.code + ")";
      var input = error.field && FIELD_INPUTS[error.field];
      if (input) { $(input).setAttribute("aria-invalid", "true"); $(input).focus(); }
      if (error.status === 401 || error.status === 403 && error.code === "NOT_AUTHENTICATED") signedOut();
    } finally {
      submit.disabled = false;
    }
  }

  async function cancelOrder(orderId, button) {
    button.disabled = true;
    button.textContent = "Canceling";
    try {
      var order = await request("DELETE", "/orders/" + orderId);
      orderUpsert(order);
    } catch (error) {
      $("order-error").textContent = "Cancel " + orderId + ": " + error.message + " (" + error.code + ")";
    }
    renderOrders();
    refreshMine();
  }

  // --- session ------------------------------------------------------------------------

  function renderAccount() {
    var signedIn = !!state.user;
    $("login-form").hidden = signedIn;
    $("user-box").hidden = !signedIn;
    $("user-name").textContent = signedIn ? state.user.username : "";
    $("order-form").hidden = !signedIn;
    $("entry-login-hint").hidden = signedIn;
    if (!signedIn) {
      state.orders = new Map();
      state.balances = new Map();
      renderOrders();
      renderBalances();
    }
  }

  function signedOut() {
    state.user = null;
    renderAccount();
  }

  async function login(event) {
    event.preventDefault();
    $("login-error").textContent = "";
    try {
      await ensureCsrf();
      var credentials = { username: $("login-username").value, password: $("login-password").value };
      if ($("login-otp").value) credentials.otp = $("login-otp").value;
      var user = await request("POST", "/auth/login", credentials);
      state.user = { id: user.id, username: user.username };
      $("login-password").value = "";
      $("login-otp").value = "";
      $("login-otp-label").hidden = true;
      renderAccount();
      await Promise.all([loadOrders(), loadBalances()]);
      reconnectSocket(); // the WebSocket authenticates by the new session cookie at connect
    } catch (error) {
      // Two-factor authentication is on for this account: ask for the code and sign in again.
      if (error.code === "OTP_REQUIRED") {
        $("login-otp-label").hidden = false;
        $("login-otp").focus();
      }
      $("login-error").textContent = error.message;
    }
  }

  async function logout() {
    await quietly(request("POST", "/auth/logout"));
    signedOut();
    reconnectSocket();
  }

  // --- WebSocket ---------------------------------------------------------------------

  function marketChannels(symbol) { return ["orderbook." + symbol, "trades." + symbol, "ticker." + symbol]; }

  function send(message) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(message));
  }

  function setLive(live) {
    state.wsLive = live;
    var status = $("conn-status");
    status.textContent = live ? "live" : "polling";
    status.className = "conn" + (live ? " live" : "");
  }

  function connectSocket() {
    if (!window.WebSocket) return;
    var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + config.ws_path;
    var ws;
    try { ws = new WebSocket(url); } catch (error) { return scheduleReconnect(); }
    state.ws = ws;
    ws.onopen = function () {
      state.wsRetryMs = 1000;
      setLive(true);
      var channels = marketChannels(state.symbol);
      if (state.user) channels = channels.concat(["user.orders", "user.trades", "user.balances"]);
      send({ op: "subscribe", id: "initial", channels: channels });
    };
    ws.onmessage = function (event) {
      var message;
      try { message = JSON.parse(event.data); } catch (error) { return; }
      onSocketMessage(message);
    };
    ws.onclose = function () {
      if (state.ws !== ws) return; // replaced on purpose
      state.ws = null;
      setLive(false);
      scheduleReconnect();
    };
    ws.onerror = function () { /* onclose follows */ };
  }

  function scheduleReconnect() {
    clearTimeout(state.wsTimer);
    state.wsTimer = setTimeout(connectSocket, state.wsRetryMs);
    state.wsRetryMs = Math.min(state.wsRetryMs * 2, 30000);
  }

  function reconnectSocket() {
    var old = state.ws;
    state.ws = null;
    if (old) old.close();
    setLive(false);
    state.wsRetryMs = 1000;
    clearTimeout(state.wsTimer);
    connectSocket();
  }

  function onSocketMessage(message) {
    var channel = message.channel || "";
    var dot = channel.indexOf(".");
    var kind = channel.slice(0, dot), subject = channel.slice(dot + 1);
    if (message.type === "error") {
      if (window.console) console.warn("websocket error", message.data);
      return;
    }
    if (message.type === "pong" || message.type === "subscribed" || message.type === "unsubscribed" || message.type === "authenticated") return;
    if (kind === "orderbook") {
      if (subject !== state.symbol) return;
      if (message.type === "snapshot") {
        bookReplace(message.data.bids, message.data.asks, message.sequence);
      } else if (message.type === "update") {
        if (state.book.sequence === null || message.data.prev_sequence !== state.book.sequence) {
          // A gap: ask for a fresh snapshot and ignore deltas until it comes.
          state.book.sequence = null;
          send({ op: "resync", channel: channel });
          return;
        }
        bookApply(message.data.bids || [], state.book.bids);
        bookApply(message.data.asks || [], state.book.asks);
        state.book.sequence = message.sequence;
        renderBook();
      }
    } else if (kind === "trades" && subject === state.symbol && message.type === "update") {
      var trades = (message.data || []).map(function (t) {
        return { id: t.sequence, price: t.price, quantity: t.quantity, taker_side: t.taker_side, timestamp: t.timestamp,
          executed_at: new Date(Number(t.timestamp) || Date.now()).toISOString() };
      });
      trades.forEach(klinesAddTrade);
      state.trades = trades.reverse().concat(state.trades).slice(0, 200);
      renderTrades();
      drawChart();
    } else if (kind === "ticker" && subject === state.symbol && message.type === "update") {
      renderTicker(message.data);
    } else if (channel === "user.orders" && message.type === "update") {
      orderUpsert(message.data);
      renderOrders();
    } else if (channel === "user.balances" && message.type === "update") {
      (message.data || []).forEach(function (row) { state.balances.set(row.asset, row); });
      renderBalances();
    }
  }

  // --- market selection and polling --------------------------------------------------

  function loadMarket() {
    return Promise.all([quietly(loadBook()), quietly(loadTrades()), quietly(loadTicker()), quietly(loadKlines())]);
  }

  function selectMarket(symbol, push) {
    if (symbol === state.symbol) return;
    var previous = state.symbol;
    state.symbol = symbol;
    state.book = { bids: new Map(), asks: new Map(), sequence: null };
    state.trades = [];
    state.klines = [];
    renderBook(); renderTrades(); drawChart(); updateEntry();
    if (push) history.pushState({ symbol: symbol }, "", "/trade/" + symbol + "/");
    document.title = symbol + " | " + document.title.split(" | ").pop();
    if (state.wsLive) {
      send({ op: "unsubscribe", channels: marketChannels(previous) });
      send({ op: "subscribe", channels: marketChannels(symbol) });
    }
    loadMarket();
    renderOrders();
  }

  function startPolling() {
    state.timers.push(setInterval(function () {
      if (!state.wsLive && !document.hidden) {
        quietly(loadBook()); quietly(loadTrades()); quietly(loadTicker());
      }
    }, POLL_PUBLIC_MS));
    state.timers.push(setInterval(function () {
      if (!state.wsLive && state.user && !document.hidden) { quietly(loadOrders()); quietly(loadBalances()); }
    }, POLL_PRIVATE_MS));
    state.timers.push(setInterval(function () {
      if (!document.hidden) quietly(loadKlines());
    }, POLL_KLINES_MS));
    // Live mode: a ping now and then keeps proxies from closing an idle socket.
    state.timers.push(setInterval(function () { if (state.wsLive) send({ op: "ping" }); }, 20000));
  }

  function selectTab(tab) {
    document.querySelectorAll("[role=tab]").forEach(function (other) {
      var selected = other === tab;
      other.setAttribute("aria-selected", selected ? "true" : "false");
      $(other.getAttribute("aria-controls")).hidden = !selected;
    });
  }

  function bind() {
    $("market-select").addEventListener("change", function (event) { selectMarket(event.target.value, true); });
    window.addEventListener("popstate", function (event) {
      var symbol = (event.state && event.state.symbol) || config.symbol;
      $("market-select").value = symbol;
      selectMarket(symbol, false);
    });
    $("interval-select").addEventListener("change", function (event) { state.interval = event.target.value; quietly(loadKlines()); });
    $("login-form").addEventListener("submit", login);
    $("logout-button").addEventListener("click", logout);
    $("order-form").addEventListener("submit", submitOrder);
    $("order-type").addEventListener("change", updateEntry);
    document.querySelectorAll("input[name=side]").forEach(function (input) { input.addEventListener("change", updateEntry); });
    $("open-orders").addEventListener("click", function (event) {
      var button = event.target.closest("button.cancel");
      if (button) cancelOrder(button.getAttribute("data-order-id"), button);
    });
    // Clicking a book level copies its price into the order form.
    ["orderbook-bids", "orderbook-asks"].forEach(function (id) {
      $(id).addEventListener("click", function (event) {
        var row = event.target.closest("tr[data-price]");
        if (row) $("order-price").value = row.getAttribute("data-price");
      });
    });
    document.querySelectorAll("[role=tab]").forEach(function (tab) {
      tab.addEventListener("click", function () { selectTab(tab); });
    });
    var resizeTimer;
    window.addEventListener("resize", function () { clearTimeout(resizeTimer); resizeTimer = setTimeout(drawChart, 100); });
  }

  function start() {
    bind();
    renderAccount();
    updateEntry();
    setLive(false);
    if (!state.symbol) {
      $("book-spread").textContent = "No market is listed yet.";
      return;
    }
    history.replaceState({ symbol: state.symbol }, "");
    loadMarket();
    if (state.user) { quietly(loadOrders()); quietly(loadBalances()); }
    startPolling();
    connectSocket();
  }

  start();
})();
