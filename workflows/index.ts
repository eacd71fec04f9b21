export { abortSignal, approveCutoverSignal, migrateInfrastructure, progressQuery } from './migrate-infrastructure';
