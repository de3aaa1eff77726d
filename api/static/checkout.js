// The checkout page: get the payment (the merchant made it, or the demo shop's server step makes
// it), confirm it with Stripe.js, then follow it through the pipeline with
// GET /payments/<id>/timeline until its event is emitted. The page never holds an API key and
// never sets an amount: it holds a checkout token good for this one payment only.
(() => {
  'use strict';
  const cfg = JSON.parse(document.getElementById('checkout-config').textContent);
  const ATTEMPT = 'checkout.attempt'; // {key, body, paymentId, token}: kept until it finishes
  const BOUND = cfg.mode === 'payment'; // the merchant's checkout link: one payment, given
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

  async function api(method, path, { body, key, token } = {}) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (key) headers['Idempotency-Key'] = key;
    if (token) headers.Authorization = `Bearer ${token}`;
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

  async function follow(paymentId, token) {
    if (following === paymentId) return;
    following = paymentId;
    const until = Date.now() + FOLLOW_FOR_MS;
    while (following === paymentId) {
      let timeline;
      try {
        timeline = await api('GET', `/payments/${paymentId}/timeline`, { token });
      } catch (err) {
        showError(err.message);
        if (err.status === 401 || err.status === 403) { // the token expired: nothing more to see
          following = null;
          return;
        }
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

  async function confirm(created, email, token) {
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
          body: { payment_method: made.token.card.id }, token,
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

  async function payBound() {
    const payment = cfg.payment;
    $('progress').hidden = false;
    if (payment.status === 'pending') {
      if (!payment.client_secret) {
        throw new Error('the PaymentIntent is not created yet; reload the page shortly');
      }
      await confirm(payment, null, cfg.token);
    }
    await follow(payment.id, cfg.token);
  }

  async function payDemoOrder() {
    const body = { order: $('order').value };
    const email = $('email').value.trim();
    if (email) body.customer_email = email;
    // One idempotency key per attempt: a resubmit (or a reload) of the same form reuses it.
    let attempt = loadAttempt();
    if (!attempt || JSON.stringify(attempt.body) !== JSON.stringify(body)) {
      attempt = { key: uuid(), body };
      saveAttempt(attempt);
    }
    // The demo merchant's server prices the order, makes the payment and a token for it.
    const created = await api('POST', '/checkout/orders', { body, key: attempt.key });
    attempt.paymentId = created.id;
    attempt.token = created.checkout_token;
    saveAttempt(attempt);
    following = null;
    $('progress').hidden = false;
    if (created.status === 'pending') {
      if (!created.client_secret) {
        throw new Error(created.pending_reason || 'the PaymentIntent is not created yet; retry shortly');
      }
      await confirm(created, email, attempt.token);
    }
    await follow(created.id, attempt.token);
  }

  $('pay-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    if (busy) return; // a second click while the first is in flight does nothing
    setBusy(true);
    showError('');
    try {
      await (BOUND ? payBound() : payDemoOrder());
    } catch (err) {
      showError(err.message);
      setBusy(false);
    }
  });

  $('again').addEventListener('click', () => {
    sessionStorage.removeItem(ATTEMPT);
    if (BOUND) window.location.assign('/checkout');
    else window.location.reload();
  });

  if (BOUND) {
    // A merchant's link to a payment already settled (or being settled): show where it is.
    if (cfg.payment.status !== 'pending') follow(cfg.payment.id, cfg.token);
  } else {
    // After a reload: the same form, the same key, and the payment it made, if any.
    const previous = loadAttempt();
    if (previous && previous.body && previous.body.order) {
      $('order').value = previous.body.order;
      $('email').value = previous.body.customer_email || '';
      if (previous.paymentId) follow(previous.paymentId, previous.token);
    }
  }
})();
