// The MQTT connection to the KMS's broker: at most one client, made with the box's current
// identity (the setup one, or the one rotate-cert stored) and subscribed to the box's inbound
// topics. Everything the box publishes goes through here, so no other part holds the client.
import { readFileSync } from 'node:fs';
import type { TLSSocket } from 'node:tls';
import type { MqttClient } from 'mqtt';
import { pksError } from '../../appliance/errors.js';
import type { Logger } from '../../appliance/log.js';
import { connectLink, publish } from '../../appliance/mqtt-link.js';
import { BOX_INBOUND, boxTopic, type TopicName } from '../../appliance/contracts/topics.js';
import type { UplinkConfig } from './config.js';

export interface Identity {
  cert: string;
  key: string;
}

export interface LinkEvents {
  message: (topic: string, payload: Buffer) => Promise<void>;
  connect: () => void;
}

export class Link {
  private client: MqttClient | null = null;
  private closed = false;

  constructor(
    private readonly cfg: UplinkConfig,
    /** the identity the next connection presents (rotate-cert swaps it, then reconnects) */
    public identity: Identity,
    private readonly on: LinkEvents,
    private readonly log: Logger,
  ) {}

  get connected(): boolean {
    return this.client?.connected ?? false;
  }
  /** a connection held or being made */
  get open(): boolean {
    return this.client !== null;
  }
  /** Serial of the client certificate on the live TLS connection, null when not connected. */
  get certSerial(): string | null {
    if (!this.connected) return null;
    const sock = this.client?.stream as TLSSocket | undefined;
    const c = typeof sock?.getCertificate === 'function' ? sock.getCertificate() : null;
    return c && 'serialNumber' in c ? (c.serialNumber as string) : null;
  }

  connect(): void {
    if (this.client || this.closed) return;
    const m = this.cfg.mqtt;
    const client = connectLink(
      {
        host: m.host,
        port: m.port,
        ca: readFileSync(m.caFile),
        cert: this.identity.cert,
        key: this.identity.key,
        clientId: this.cfg.boxId,
        sessionExpirySeconds: m.sessionExpirySeconds,
        keepaliveSeconds: m.keepaliveSeconds,
        reconnectMs: Math.round(m.reconnectSeconds * 1000),
      },
      BOX_INBOUND.map((t) => boxTopic(this.cfg.boxId, t)),
      (t, p) => this.on.message(t, p),
      this.log,
    );
    client.on('connect', () => this.on.connect());
    this.client = client;
  }

  async disconnect(): Promise<void> {
    const c = this.client;
    this.client = null;
    if (c) await c.endAsync().catch(() => undefined);
  }

  /** For good: no connection is made from now on; the current one ends once `drain` settled. */
  async close(drain?: Promise<unknown>): Promise<void> {
    this.closed = true;
    await drain?.catch(() => undefined);
    await this.disconnect();
  }

  /** Disconnects and connects again with the current identity; true once the broker took it. */
  async reconnect(ms: number): Promise<boolean> {
    await this.disconnect();
    this.connect();
    const c = this.client;
    if (!c) return false;
    if (c.connected) return true;
    return new Promise((resolve) => {
      const done = (ok: boolean): void => {
        clearTimeout(timer);
        c.off('connect', onConnect);
        resolve(ok);
      };
      const onConnect = (): void => done(true);
      const timer = setTimeout(() => done(false), ms);
      timer.unref();
      c.on('connect', onConnect);
    });
  }

  /**
   * QoS 1 on the box's topic `name`. Needs a client, not a live connection: while the broker is
   * away the MQTT client keeps the message and sends it on reconnect (callers that must not wait
   * for that check `connected` first).
   */
  publish(name: TopicName, body: string, retain = false): Promise<void> {
    if (!this.client) return Promise.reject(pksError('PKS_UPLINK_DOWN', 'not connected to the broker'));
    return publish(this.client, boxTopic(this.cfg.boxId, name), body, retain);
  }
}
