// The MQTT v5 link as both ends use it: mutual TLS with a client certificate (the broker takes
// its CN as our identity), a persistent session (clean: false + Session Expiry Interval) so
// QoS 1 messages published while we are away wait for us, and inbound messages handled one at
// a time with the PUBACK sent only once the handler is done: if we die half-way, the broker
// delivers the message again.
import mqtt, { type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import type { Logger } from './log.js';

export interface LinkOptions {
  host: string;
  port: number;
  ca: string | Buffer;
  cert: string | Buffer;
  key: string | Buffer;
  clientId: string;
  sessionExpirySeconds: number;
  keepaliveSeconds: number;
  /** ms between reconnect attempts; 0 = no automatic reconnect */
  reconnectMs: number;
  /** TLS server name (the dev broker certificate says localhost) */
  servername?: string;
}

export type InboundHandler = (topic: string, payload: Buffer, packet: IPublishPacket) => Promise<void>;

export function connectLink(o: LinkOptions, subscriptions: string[], onMessage: InboundHandler, log: Logger): MqttClient {
  const options: IClientOptions = {
    protocol: 'mqtts',
    host: o.host,
    port: o.port,
    servername: o.servername ?? (o.host === '127.0.0.1' ? 'localhost' : o.host),
    ca: o.ca,
    cert: o.cert,
    key: o.key,
    rejectUnauthorized: true,
    protocolVersion: 5,
    clientId: o.clientId,
    clean: false,
    keepalive: o.keepaliveSeconds,
    reconnectPeriod: o.reconnectMs,
    connectTimeout: 10_000,
    resubscribe: false,
    properties: { sessionExpiryInterval: o.sessionExpirySeconds },
  };
  const client = mqtt.connect(options);
  client.handleMessage = (packet, done) => {
    const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
    onMessage(packet.topic, payload, packet).then(
      () => done(),
      (err: unknown) => {
        // handlers report their own errors; anything reaching here is a bug, not input
        log.error('inbound handler failed', { topic: packet.topic, err });
        done();
      },
    );
  };
  client.on('connect', (ack) => {
    log.info('mqtt connected', { sessionPresent: ack.sessionPresent });
    // (re)subscribing is idempotent; doing it on every connect also covers an expired session
    if (subscriptions.length > 0)
      client.subscribe(
        subscriptions.map((t) => t),
        { qos: 1 },
        (err) => {
          if (err) log.warn('mqtt subscribe failed', { err });
        },
      );
  });
  client.on('error', (err) => log.warn('mqtt error', { err }));
  client.on('offline', () => log.info('mqtt offline'));
  return client;
}

/** QoS 1 publish that resolves on PUBACK and rejects when the link drops first. */
export function publish(client: MqttClient, topic: string, payload: string | Buffer, retain = false): Promise<void> {
  return new Promise((resolve, reject) => {
    client.publish(topic, payload, { qos: 1, retain }, (err) => (err ? reject(err) : resolve()));
  });
}
