export { abortSignal, approveCutoverSignal, confirmDestinationGoneSignal, migrateInfrastructure, progressQuery } from './migrate-infrastructure';
export { listCloud } from './list-cloud';
