// Signing in and out: the account form, the token kept for this tab only, and the app shown while signed in.

import { Hub, signIn, tokenExpiry } from "./hubapi.js";

const $ = (id) => document.getElementById(id);
const STORE_KEY = "renderhub.viewer"; // sessionStorage: {accountId, token}; never the key
const ACCOUNT_KEY = "renderhub.viewer.account"; // localStorage: the last account id, to fill in the form
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const EXPIRED = "Your sign-in has expired. Please sign in again.";

export class SignIn {
  /**
   * @param state the ViewerState, whose `hub` this module alone sets and clears
   * @param regions the RegionPicker, measuring and choosing the region only while signed in
   * @param list  the SessionList, refreshing only while signed in
   * @param view  the SessionView, emptied whenever the account changes
   * @param converter the Converter, stopped on sign-out; converted, the ConvertedList, the account's models
   */
  constructor(state, { regions, list, view, converter, converted }) {
    this.state = state;
    this.regions = regions;
    this.list = list;
    this.view = view;
    this.converter = converter;
    this.converted = converted;
    this.expiryTimer = null;
  }

  /** Carry on with the token this tab saved if it has more than a minute left; else ask for the key. */
  restore() {
    let saved = null;
    try {
      saved = JSON.parse(sessionStorage.getItem(STORE_KEY) || "null");
    } catch {
      saved = null;
    }
    if (saved && typeof saved.token === "string" && tokenExpiry(saved.token) * 1000 > Date.now() + 60000) {
      this.start(saved.accountId, saved.token);
    } else {
      sessionStorage.removeItem(STORE_KEY);
      this.showForm();
    }
  }

  showForm(message = "") {
    $("app").hidden = true;
    $("who").hidden = true;
    $("signin").hidden = false;
    $("signin-error").textContent = message;
    $("account-id").value = $("account-id").value || localStorage.getItem(ACCOUNT_KEY) || "";
    $("account-key").value = "";
    ($("account-id").value ? $("account-key") : $("account-id")).focus();
  }

  async submit(event) {
    event.preventDefault();
    const accountId = $("account-id").value.trim().toLowerCase();
    const key = $("account-key").value.trim();
    if (!UUID.test(accountId)) {
      $("signin-error").textContent = "An account id looks like 8-4-4-4-12 hexadecimal digits, with dashes.";
      return;
    }
    if (!key) {
      $("signin-error").textContent = "Please enter the account key.";
      return;
    }
    $("signin-button").disabled = true;
    $("signin-button").textContent = "Signing in…";
    $("signin-error").textContent = "";
    try {
      const token = await signIn(accountId, key);
      sessionStorage.setItem(STORE_KEY, JSON.stringify({ accountId, token }));
      localStorage.setItem(ACCOUNT_KEY, accountId);
      this.start(accountId, token);
    } catch (exc) {
      $("signin-error").textContent = exc.message || String(exc);
    } finally {
      $("account-key").value = "";
      $("signin-button").disabled = false;
      $("signin-button").textContent = "Sign in";
    }
  }

  start(accountId, token) {
    this.state.hub = new Hub(accountId, token);
    $("signin").hidden = true;
    $("app").hidden = false;
    $("who").hidden = false;
    $("who-account").textContent = accountId;
    this.view.clear();
    this.converter.stop();
    this.regions.start();
    this.list.start();
    this.converted.refresh();
    const expires = tokenExpiry(token) * 1000;
    clearTimeout(this.expiryTimer);
    if (expires) {
      // setTimeout takes at most a signed 32-bit delay; a longer one would fire at once.
      const left = Math.min(expires - Date.now(), 2 ** 31 - 1);
      this.expiryTimer = setTimeout(() => this.expired(), left);
    }
  }

  signOut(message = "") {
    this.view.clear();
    this.list.stop();
    this.regions.stop();
    this.converter.stop();
    this.converted.clear();
    clearTimeout(this.expiryTimer);
    this.state.hub = null;
    sessionStorage.removeItem(STORE_KEY);
    this.showForm(message);
  }

  /** The token ran out, or the hub refused it. */
  expired() {
    this.signOut(EXPIRED);
  }
}
