// The checkout page: create the payment (idempotent), confirm it with Stripe.js, then follow it
// through the pipeline with GET /payments/<id>/timeline until its event is emitted.
(() => {
  'use strict';
  const cfg = JSON.parse(document.getElementById('checkout-config').textContent);
  const ATTEMPT = 'checkout.attempt'; // {key, body, paymentId}: kept until the payment finishes
  const FOLLOW_FOR_MS = 120000;
  const $ = (id) => document.getElementById(id);
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  const stripe = Stripe(cfg.publishableKey);
  const card = stripe.elements().create('card');
  card.mount('#card-element');

  let busy = false;
  let following = null;
  const clientSteps = {}; // what only the browser knows: the confirmation and 3-D Secure

  function uuid() {
    if (window.crypto.randomUUID) return window.crypto.randomUUID();
    const b = window.crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 15) | 64;
    b[8] = (b[8] & 63) | 128;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  function loadAttempt() {
    try { return JSON.parse(sessionStorage.getItem(ATTEMPT)); } catch (e) { return null; }
  }
  function saveAttempt(a) { sessionStorage.setItem(ATTEMPT, JSON.stringify(a)); }

  function toMinor(text, currency) {
    const m = /^\s*(\d+)(?:[.,](\d{1,2}))?\s*$/.exec(text);
    if (!m) throw new Error(`amount must be a number like 19.99, got "${text}"`);
    if (cfg.zeroDecimal.includes(currency)) {
      if (m[2]) throw new Error(`${currency.toUpperCase()} has no minor unit: enter a whole amount`);
      return parseInt(m[1], 10);
    }
    return parseInt(m[1], 10) * 100 + parseInt((m[2] || '0').padEnd(2, '0'), 10);
  }

  async function api(method, path, { body, key } = {}) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (key) headers['Idempotency-Key'] = key;
    for (let attempt = 0; ; attempt += 1) {
      const response = await fetch(path, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      });
      const data = await response.json().catch(() => ({}));
      const retryAfter = response.headers.get('Retry-After');
      if (retryAfter && [409, 503].includes(response.status) && attempt < 5) {
        await sleep(1000 * (Number(retryAfter) || 1)); // e.g. the first click is still creating
        continue;
      }
      if (!response.ok) {
        const error = new Error(data.detail || `${method} ${path} answered ${response.status}`);
        error.status = response.status;
        error.problem = data;
        throw error;
      }
      return data;
    }
  }

  function showError(message) { $('form-error').textContent = message; $('form-error').hidden = !message; }
  function setBusy(value) { busy = value; $('pay').disabled = value; }
  function setClient(key, state, detail) { clientSteps[key] = { state, detail }; }

  function render(timeline) {
    const payment = timeline.payment;
    $('progress').hidden = false;
    $('payment-id').textContent = payment.id;
    $('status').textContent = payment.status;
    $('status').dataset.status = payment.status;
    const failure = payment.status === 'failed'
      ? `${payment.failure_message || 'declined'}${payment.failure_code ? ` (${payment.failure_code})` : ''}`
      : '';
    $('failure').textContent = failure;
    $('failure').hidden = !failure;

    const steps = [];
    for (const step of timeline.steps) {
      if (step.key === 'confirmed') {
        if (clientSteps['3ds']) {
          steps.push({ key: '3ds', label: '3-D Secure', at: null, ...clientSteps['3ds'] });
        }
        const mine = clientSteps.confirmed;
        steps.push(step.state === 'waiting' && mine ? { ...step, ...mine } : step);
      } else {
        steps.push(step);
      }
    }
    const list = $('steps');
    list.replaceChildren(...steps.map((step) => {
      const li = document.createElement('li');
      li.className = step.state;
      li.dataset.step = step.key;
      li.dataset.state = step.state;
      const label = document.createElement('span');
      label.className = 'label';
      label.textContent = step.label;
      li.append(label);
      if (step.at) {
        const at = document.createElement('span');
        at.className = 'at';
        at.textContent = new Date(step.at).toLocaleTimeString([], { hour12: false });
        li.append(at);
      }
      const detail = document.createElement('span');
      detail.className = 'detail';
      detail.textContent = step.detail;
      li.append(detail);
      return li;
    }));
    $('raw').textContent = JSON.stringify(timeline, null, 2);
  }

  async function follow(paymentId) {
    if (following === paymentId) return;
    following = paymentId;
    const until = Date.now() + FOLLOW_FOR_MS;
    while (following === paymentId) {
      let timeline;
      try {
        timeline = await api('GET', `/payments/${paymentId}/timeline`);
      } catch (err) {
        showError(err.message);
        await sleep(1500);
        continue;
      }
      render(timeline);
      if (timeline.finished) {
        sessionStorage.removeItem(ATTEMPT); // the next payment gets a new idempotency key
        setBusy(true);
        $('again').hidden = false;
        following = null;
        return;
      }
      if (Date.now() > until) {
        showError('still pending: the reconciler settles it on its next cycle; reload to look again');
        following = null;
        return;
      }
      await sleep(700);
    }
  }

  async function confirm(created, email) {
    setClient('confirmed', 'waiting', 'sending the card to Stripe');
    let result;
    if (!cfg.standIn) {
      result = await stripe.confirmCardPayment(created.client_secret, {
        payment_method: { card, billing_details: email ? { email } : {} },
      });
    } else {
      // The local stand-in's Stripe.js cannot attach a card element to an intent: the card
      // becomes a token in the browser (it goes to the stand-in, never to our API), the API
      // confirms the intent with it, and confirmCardPayment runs the 3-D Secure step.
      const made = await stripe.createToken(card);
      if (made.error) {
        setClient('confirmed', 'failed', (made.error && made.error.message) || 'card refused');
        return;
      }
      let answer;
      try {
        answer = await api('POST', `/payments/${created.id}/confirm`, {
          body: { payment_method: made.token.card.id },
        });
      } catch (err) {
        if (err.status === 402 || err.status === 400) {
          setClient('confirmed', 'failed', `declined: ${err.message}`);
          return;
        }
        throw err;
      }
      if (answer.provider_status === 'requires_action') {
        setClient('3ds', 'waiting', 'authenticate in the 3-D Secure dialog');
        result = await stripe.confirmCardPayment(created.client_secret);
        setClient('3ds', result.error ? 'failed' : 'done',
          result.error ? (result.error.message || 'authentication failed') : 'authenticated');
      } else {
        result = { paymentIntent: { status: answer.provider_status } };
      }
    }
    if (result.error) {
      setClient('confirmed', 'failed', result.error.message || 'declined');
    } else {
      setClient('confirmed', 'done', result.paymentIntent.status);
    }
  }

  $('pay-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    if (busy) return; // a second click while the first is in flight does nothing
    setBusy(true);
    showError('');
    try {
      const currency = $('currency').value;
      const body = { amount_minor: toMinor($('amount').value, currency), currency };
      const email = $('email').value.trim();
      if (email) body.customer_email = email;
      // One idempotency key per attempt: a resubmit (or a reload) of the same form reuses it.
      let attempt = loadAttempt();
      if (!attempt || JSON.stringify(attempt.body) !== JSON.stringify(body)) {
        attempt = { key: uuid(), body };
        saveAttempt(attempt);
      }
      const created = await api('POST', '/payments', { body, key: attempt.key });
      attempt.paymentId = created.id;
      saveAttempt(attempt);
      following = null;
      $('progress').hidden = false;
      if (created.status === 'pending') {
        if (!created.client_secret) {
          throw new Error(created.pending_reason || 'the PaymentIntent is not created yet; retry shortly');
        }
        await confirm(created, email);
      }
      await follow(created.id);
    } catch (err) {
      showError(err.message);
      setBusy(false);
    }
  });

  $('again').addEventListener('click', () => {
    sessionStorage.removeItem(ATTEMPT);
    window.location.reload();
  });

  // After a reload: the same form, the same key, and the payment it made, if any.
  const previous = loadAttempt();
  if (previous) {
    const amount = previous.body.amount_minor;
    $('currency').value = previous.body.currency;
    $('amount').value = cfg.zeroDecimal.includes(previous.body.currency)
      ? String(amount) : `${Math.floor(amount / 100)}.${String(amount % 100).padStart(2, '0')}`;
    $('email').value = previous.body.customer_email || '';
    if (previous.paymentId) follow(previous.paymentId);
  }
})();
