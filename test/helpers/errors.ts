// The coded error a promise rejects with ('no error' when it resolves), for asserting refusals.
import type { PksError } from '../../appliance/errors.js';

export async function errorCode(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as PksError).code ?? String(e);
  }
  return 'no error';
}
