// Lives with the plant-in-a-box scripts; tests use the same code.
export * from '../../scripts/plant/broker.js';
