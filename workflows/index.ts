export { abortSignal, approveCutoverSignal, confirmDestinationGoneSignal, migrateInfrastructure, progressQuery } from './migrate-infrastructure';
