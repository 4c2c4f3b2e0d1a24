/**
 * ProposalPolicy: the maintainer's `propose` decision (seed 000, "taking packages"). The push flow asks it once
 * the whole graph of a verified release is stored; only `accepted` seals the release. The message-protocol
 * issue provides a layer that asks the maintainer's handler.
 *
 * (Interface fixed by the skeleton.)
 */
import { Context, Effect, Layer, Option, Schema } from "effect"
import type { VerifiedRelease } from "./Verifier.js"

export const Decision = Schema.Union(
  Schema.TaggedStruct("Accepted", {}),
  Schema.TaggedStruct("Queued", { message: Schema.String }),
  Schema.TaggedStruct("Rejected", { reason: Schema.String })
)
export type Decision = typeof Decision.Type

/** How a policy may talk with the publishing user during the decision (seed 000's send/receive). */
export interface Conversation {
  readonly send: (message: string) => Effect.Effect<void>
  readonly receive: (prompt: string) => Effect.Effect<string, ConversationClosed>
}

export class ConversationClosed extends Schema.TaggedError<ConversationClosed>()("ConversationClosed", {
  detail: Schema.String
}) {}

export class ProposalPolicy extends Context.Tag("upm/ProposalPolicy")<ProposalPolicy, {
  readonly propose: (release: VerifiedRelease, conversation: Conversation | undefined) => Effect.Effect<Decision>
}>() {}

/** The built-in default once the Verifier has checked signature and ownership: accept. */
export const layerAcceptAll = Layer.succeed(ProposalPolicy, ProposalPolicy.of({
  propose: () => Effect.succeed({ _tag: "Accepted" as const })
}))

/**
 * Open conversations with users, by their unguessable token. During `publish`, the CLI opens a message
 * session, obtains a token, and names it on the sync connection before pushing (query `attach <token>`);
 * the push flow then hands that conversation to the policy, which relays the handler's `upm send` /
 * `upm receive` over the user's message session. (The message-protocol issue provides the real layer.)
 */
export class Conversations extends Context.Tag("upm/Conversations")<Conversations, {
  readonly attach: (token: string) => Effect.Effect<Option.Option<Conversation>>
}>() {}

/** No message sessions: every token is unknown. */
export const layerNoConversations = Layer.succeed(Conversations, Conversations.of({
  attach: () => Effect.succeed(Option.none())
}))
